// Real boots of the real image under QEMU (TCG or KVM, whatever the host allows). The VM's TAP
// lives in a private network namespace created (and deleted) by the test; nothing touches the
// host's own network. Needs root, qemu-system-x86_64 and ip; the image is built once into the
// shared cache (.cache/images).
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { VmLaunchSpec, VmmProcess } from '../../src/vms/ports.ts';
import { ensureSharedImages, type SharedImages } from '../../src/image/shared.ts';
import { createQemuDriver, qemuDriverWithVerdict } from '../../src/hypervisors/qemu/index.ts';
import { pidFilePath } from '../../src/hypervisors/qemu/args.ts';
import { capturingLogger } from '../support/logs.ts';

function has(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const isRoot = process.getuid?.() === 0;
const hasQemu = has('qemu-system-x86_64');
const bootSkip = !isRoot ? 'needs root' : !hasQemu ? 'needs qemu-system-x86_64' : !has('ip') ? 'needs iproute2' : false;

let work: string;
let images: SharedImages;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'ct-qemu-test-'));
});

after(async () => {
  await rm(work, { recursive: true, force: true });
});

async function getImages(log: (msg: string) => void): Promise<SharedImages> {
  images ??= await ensureSharedImages(log);
  return images;
}

function makeLayer(path: string): void {
  execFileSync('truncate', ['-s', '1G', path]);
  execFileSync('mkfs.ext4', ['-q', '-F', '-L', 'clarateach-layer', '-m', '0', '-E', 'lazy_itable_init=1,lazy_journal_init=1', path]);
}

function specFor(name: string, img: SharedImages, extra: Partial<VmLaunchSpec> = {}): VmLaunchSpec {
  const dir = join(work, name);
  execFileSync('mkdir', ['-p', dir]);
  const layer = join(dir, 'layer.ext4');
  if (!existsSync(layer)) makeLayer(layer);
  return {
    id: `qemu-test.${name}`,
    vcpus: 1,
    memoryMb: 512,
    kernelPath: img.kernelPath,
    initrdPath: img.initrdPath,
    kernelArgs: '',
    baseDiskPath: img.rootfsPath,
    layerDiskPath: layer,
    tapName: '',
    mac: '06:00:0a:d5:00:02',
    runDir: join(dir, 'run'),
    consoleLogPath: join(dir, 'console.log'),
    ...extra,
  };
}

async function waitForConsole(spec: VmLaunchSpec, pattern: RegExp, timeoutMs: number): Promise<number> {
  const started = Date.now();
  for (;;) {
    const text = existsSync(spec.consoleLogPath) ? readFileSync(spec.consoleLogPath, 'utf8') : '';
    if (pattern.test(text)) return Date.now() - started;
    if (Date.now() - started > timeoutMs) {
      throw new Error(
        `console of ${spec.id} has no ${pattern} after ${timeoutMs} ms; last lines:\n${text.split('\n').slice(-15).join('\n')}`,
      );
    }
    await sleep(100);
  }
}

/** Processes whose command line mentions `needle`. */
function processesMentioning(needle: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
      if (cmdline.includes(needle)) found.push(Number(entry));
    } catch {
      // gone
    }
  }
  return found;
}

function sessionOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3]);
}

test(
  'boots the image with a TAP in a private netns, answers ping, powers off on a graceful stop',
  { skip: bootSkip, timeout: 15 * 60_000 },
  async (t) => {
    const img = await getImages((m) => t.diagnostic(m));
    const ns = `ct-img-t${process.pid}`;
    const nsExec = (...args: string[]): string => execFileSync('ip', ['netns', 'exec', ns, ...args], { encoding: 'utf8' });
    execFileSync('ip', ['netns', 'add', ns]);
    try {
      nsExec('ip', 'link', 'set', 'lo', 'up');
      nsExec('ip', 'tuntap', 'add', 'dev', 'cttap0', 'mode', 'tap');
      nsExec('ip', 'addr', 'add', '10.213.0.1/24', 'dev', 'cttap0');
      nsExec('ip', 'link', 'set', 'cttap0', 'up');

      const logs: string[] = [];
      const driver = await createQemuDriver({
        imagesDir: img.dir,
        stateDir: join(work, 'state'),
        launchPrefix: ['ip', 'netns', 'exec', ns],
        log: capturingLogger(logs),
      });
      t.diagnostic(`acceleration ${driver.info.acceleration}: ${driver.verdict.reason}`);
      const spec = specFor('net', img, {
        vcpus: 2,
        memoryMb: 1024,
        kernelArgs: 'ip=10.213.0.2::10.213.0.1:255.255.255.0:seat-1:eth0:off clarateach.dns=10.213.0.1',
        tapName: 'cttap0',
      });
      const t0 = Date.now();
      const proc = await driver.start(spec);
      t.diagnostic(`start() resolved in ${Date.now() - t0} ms (pid ${proc.pid})`);
      assert.ok(driver.isAlive(proc));
      assert.notEqual(sessionOf(proc.pid), sessionOf(process.pid), 'QEMU runs in its own session');
      assert.equal(Number(readFileSync(pidFilePath(spec.runDir), 'utf8').trim()), proc.pid);

      await waitForConsole(spec, /clarateach-init: network eth0 10\.213\.0\.2\/24 gateway 10\.213\.0\.1/, 180_000);
      t.diagnostic(`init network line ${Date.now() - t0} ms after start()`);
      await waitForConsole(spec, /clarateach-init: ready/, 60_000);
      assert.match(
        readFileSync(spec.consoleLogPath, 'utf8'),
        /clarateach-initrd: root is overlay of \/dev\/vd[ab] \(clarateach-base, ro\) and \/dev\/vd[ab] \(clarateach-layer, rw\)/,
      );

      let pinged = false;
      for (let i = 0; i < 5 && !pinged; i++) {
        try {
          nsExec('ping', '-c', '1', '-W', '3', '10.213.0.2');
          pinged = true;
        } catch {
          await sleep(1000);
        }
      }
      assert.ok(pinged, 'the guest answers ping on its TAP');

      // A fresh driver instance, as after an agent restart: it knows only the spec and the process.
      const adopted = qemuDriverWithVerdict(driver.verdict, { imagesDir: img.dir, stateDir: join(work, 'state') });
      const t1 = Date.now();
      await adopted.stop(spec, proc, 60_000);
      t.diagnostic(`graceful stop took ${Date.now() - t1} ms`);
      assert.equal(adopted.isAlive(proc), false);
      const consoleText = readFileSync(spec.consoleLogPath, 'utf8');
      assert.match(consoleText, /clarateach-init: shutdown requested \(SIGINT\)/);
      assert.match(consoleText, /clarateach-init: layer filesystem remounted read-only/);
      assert.match(consoleText, /clarateach-init: powering off/);
      assert.match(consoleText, /reboot: Power down/);
      assert.equal(existsSync(pidFilePath(spec.runDir)), false);
      // The layer was left clean: no journal recovery needed.
      const fsck = execFileSync('e2fsck', ['-n', spec.layerDiskPath], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
      assert.match(fsck, /clean/);
    } finally {
      try {
        const pids = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' })
          .split('\n')
          .filter((p) => p !== '');
        for (const pid of pids) process.kill(Number(pid), 'SIGKILL');
      } catch {
        // namespace already gone
      }
      execFileSync('ip', ['netns', 'del', ns]);
    }
  },
);

test(
  'a missing kernel rejects with the reason and leaves no process',
  { skip: hasQemu ? false : 'needs qemu-system-x86_64', timeout: 60_000 },
  async () => {
    const driver = await createQemuDriver({ imagesDir: work, stateDir: join(work, 'state'), accel: 'tcg' });
    const dir = join(work, 'nokernel');
    execFileSync('mkdir', ['-p', dir]);
    const spec: VmLaunchSpec = {
      id: 'qemu-test.nokernel',
      vcpus: 1,
      memoryMb: 256,
      kernelPath: join(dir, 'missing-vmlinux'),
      initrdPath: join(dir, 'missing-initrd'),
      kernelArgs: '',
      baseDiskPath: join(dir, 'base.ext4'),
      layerDiskPath: join(dir, 'layer.ext4'),
      tapName: '',
      mac: '06:00:00:00:00:01',
      runDir: join(dir, 'run'),
      consoleLogPath: join(dir, 'console.log'),
    };
    execFileSync('truncate', ['-s', '16M', spec.baseDiskPath]);
    execFileSync('truncate', ['-s', '16M', spec.layerDiskPath]);
    await assert.rejects(driver.start(spec), (error: Error) => {
      assert.match(error.message, /^qemu could not start VM qemu-test\.nokernel: /);
      assert.match(error.message, /missing-vmlinux/);
      return true;
    });
    assert.deepEqual(processesMentioning(spec.runDir), []);
    assert.equal(existsSync(pidFilePath(spec.runDir)), false);
  },
);

test('a TAP that does not exist is refused before QEMU runs (QEMU would create it)', { skip: bootSkip, timeout: 60_000 }, async () => {
  // Inside a private netns, so that even a faulty check could not add a device to the host.
  const ns = `ct-img-n${process.pid}`;
  execFileSync('ip', ['netns', 'add', ns]);
  try {
    const driver = await createQemuDriver({
      imagesDir: work,
      stateDir: join(work, 'state'),
      accel: 'tcg',
      launchPrefix: ['ip', 'netns', 'exec', ns],
    });
    const dir = join(work, 'notap');
    execFileSync('mkdir', ['-p', dir]);
    const spec: VmLaunchSpec = {
      id: 'qemu-test.notap',
      vcpus: 1,
      memoryMb: 256,
      kernelPath: join(dir, 'k'),
      initrdPath: join(dir, 'i'),
      kernelArgs: '',
      baseDiskPath: join(dir, 'b'),
      layerDiskPath: join(dir, 'l'),
      tapName: 'ctnotap0',
      mac: '06:00:00:00:00:02',
      runDir: join(dir, 'run'),
      consoleLogPath: join(dir, 'console.log'),
    };
    await assert.rejects(driver.start(spec), /TAP device ctnotap0 does not exist/);
    const links = execFileSync('ip', ['netns', 'exec', ns, 'ip', '-o', 'link'], { encoding: 'utf8' });
    assert.doesNotMatch(links, /ctnotap0/);
    assert.deepEqual(processesMentioning(spec.runDir), []);
  } finally {
    execFileSync('ip', ['netns', 'del', ns]);
  }
});

test(
  'the VMM outlives its starter being killed with SIGKILL and is stopped by another process',
  { skip: bootSkip, timeout: 15 * 60_000 },
  async (t) => {
    const img = await getImages((m) => t.diagnostic(m));
    const spec = specFor('orphan', img, { kernelArgs: 'clarateach.services=0' });
    const moduleUrl = new URL('../../src/hypervisors/qemu/index.ts', import.meta.url).href;
    const script = `
    const { createQemuDriver } = await import(${JSON.stringify(moduleUrl)});
    const driver = await createQemuDriver({ imagesDir: ${JSON.stringify(img.dir)}, stateDir: ${JSON.stringify(join(work, 'state'))}, accel: 'tcg' });
    const proc = await driver.start(JSON.parse(process.env.SPEC));
    console.log(JSON.stringify(proc));
    setInterval(() => {}, 1000);
  `;
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      env: { ...process.env, SPEC: JSON.stringify(spec) },
      stdio: ['ignore', 'pipe', 'inherit'],
      cwd: fileURLToPath(new URL('../..', import.meta.url)),
    });
    const proc = await new Promise<VmmProcess>((resolve, reject) => {
      let out = '';
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (c: string) => {
        out += c;
        const line = out.split('\n').find((l) => l.startsWith('{'));
        if (line) resolve(JSON.parse(line) as VmmProcess);
      });
      child.on('exit', (code) => reject(new Error(`starter exited (${code}) before reporting the VMM: ${out}`)));
    });
    child.kill('SIGKILL');
    await new Promise((r) => child.once('close', r));

    const driver = qemuDriverWithVerdict(
      { accel: 'tcg', reason: 'test', key: '', checkedAt: '' },
      { imagesDir: img.dir, stateDir: join(work, 'state') },
    );
    await sleep(500);
    assert.ok(driver.isAlive(proc), 'QEMU still runs after its starter died');
    await waitForConsole(spec, /clarateach-init: ready/, 180_000);
    await driver.stop(spec, proc, 60_000);
    assert.equal(driver.isAlive(proc), false);
    assert.match(readFileSync(spec.consoleLogPath, 'utf8'), /reboot: Power down/);
  },
);

test('stop() of a process that already exited resolves at once', { skip: hasQemu ? false : 'needs qemu-system-x86_64' }, async () => {
  const driver = qemuDriverWithVerdict({ accel: 'tcg', reason: 'test', key: '', checkedAt: '' }, { imagesDir: work, stateDir: work });
  const dir = join(work, 'gone');
  const spec = { runDir: join(dir, 'run') } as VmLaunchSpec;
  const started = Date.now();
  await driver.stop(spec, { pid: 2 ** 22 + 12345, startTime: 1 }, 10_000);
  assert.ok(Date.now() - started < 1000);
});
