// Acceleration choice with stand-in QEMU binaries (shell scripts): a guest that reaches its panic,
// one that hangs, one that aborts; and the cached verdict.
import assert from 'node:assert/strict';
import { constants, openSync, closeSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ACCEL_CACHE_FILE, detectAcceleration, hostTscKhz } from '../../src/hypervisors/qemu/accel.ts';

let dir: string;
let kernel: string;

function kvmOpens(): boolean {
  try {
    closeSync(openSync('/dev/kvm', constants.O_RDWR));
    return true;
  } catch {
    return false;
  }
}
const skip = kvmOpens() ? false : '/dev/kvm does not open here';

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ct-accel-'));
  kernel = join(dir, 'vmlinux');
  await writeFile(kernel, 'not really a kernel');
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A fake qemu: answers --version, otherwise runs `body` and counts its trial runs. */
async function fakeQemu(name: string, body: string): Promise<string> {
  const path = join(dir, name);
  await writeFile(
    path,
    `#!/bin/sh\nif [ "$1" = --version ]; then echo "QEMU emulator version 9.9.9 (${name})"; exit 0; fi\necho run >> "$0.runs"\n${body}\n`,
  );
  await chmod(path, 0o755);
  return path;
}

async function runs(qemu: string): Promise<number> {
  return (await readFile(`${qemu}.runs`, 'utf8').catch(() => '')).split('\n').filter((l) => l === 'run').length;
}

test('the host TSC frequency is found', async () => {
  const khz = await hostTscKhz();
  assert.ok(khz === undefined || (khz > 100_000 && khz < 10_000_000), String(khz));
});

test('KVM when the trial boot reaches the kernel panic; the verdict is cached', { skip }, async () => {
  const qemu = await fakeQemu('panics', 'echo "[    0.5] Kernel panic - not syncing: VFS: Unable to mount root fs"; sleep 30');
  const stateDir = join(dir, 'state-kvm');
  const started = Date.now();
  const verdict = await detectAcceleration({ qemuBin: qemu, kernelPath: kernel, stateDir });
  assert.equal(verdict.accel, 'kvm');
  assert.ok(Date.now() - started < 10_000, 'the trial VM is killed as soon as the panic shows');
  const again = await detectAcceleration({ qemuBin: qemu, kernelPath: kernel, stateDir });
  assert.equal(again.accel, 'kvm');
  assert.equal(await runs(qemu), 1, 'second start used the cached verdict');
  const cached = JSON.parse(await readFile(join(stateDir, ACCEL_CACHE_FILE), 'utf8')) as { accel: string };
  assert.equal(cached.accel, 'kvm');
  // A different kernel file is a different question.
  const other = join(dir, 'vmlinux-2');
  await writeFile(other, 'another kernel');
  await detectAcceleration({ qemuBin: qemu, kernelPath: other, stateDir });
  assert.equal(await runs(qemu), 2);
});

test('TCG when the trial boot hangs (bounded) or QEMU aborts', { skip }, async () => {
  const hangs = await fakeQemu('hangs', 'echo "[    0.1] booting"; sleep 30');
  const started = Date.now();
  const slow = await detectAcceleration({ qemuBin: hangs, kernelPath: kernel, stateDir: join(dir, 'state-hang'), trialTimeoutMs: 1500 });
  assert.equal(slow.accel, 'tcg');
  assert.match(slow.reason, /did not reach the kernel panic within 1500 ms/);
  assert.ok(Date.now() - started < 15_000, 'bounded: the fake hangs for 30 s');

  const aborts = await fakeQemu('aborts', 'echo "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69" >&2; kill -ABRT $$');
  const broken = await detectAcceleration({ qemuBin: aborts, kernelPath: kernel, stateDir: join(dir, 'state-abort') });
  assert.equal(broken.accel, 'tcg');
  assert.match(broken.reason, /SIGABRT.*failed to set MSR/);
  // The negative verdict is cached too.
  await detectAcceleration({ qemuBin: aborts, kernelPath: kernel, stateDir: join(dir, 'state-abort') });
  assert.equal(await runs(aborts), 1);
});

test('TCG without trying when the kernel is missing', { skip }, async () => {
  const qemu = await fakeQemu('unused', 'exit 1');
  const verdict = await detectAcceleration({ qemuBin: qemu, kernelPath: join(dir, 'missing'), stateDir: join(dir, 'state-missing') });
  assert.equal(verdict.accel, 'tcg');
  assert.match(verdict.reason, /cannot try KVM/);
  assert.equal(await runs(qemu), 0);
});
