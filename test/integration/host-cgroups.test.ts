// VM cgroups on this host's real cgroup hierarchy (v1 or v2, as detected), with real processes.
// Needs root. Every cgroup lives in a test area (test/support/cgroups/test-cgroups.ts) that is removed at the end.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, afterEach, before, describe, test } from 'node:test';
import { cgroupPathsOf, readProcessCgroups } from '../../src/host/cgroups/detect.ts';
import { CgroupError } from '../../src/host/cgroups/errors.ts';
import { realCgroupSkipReason, testCgroupArea, type TestCgroupArea } from '../support/cgroups/test-cgroups.ts';
import { createVmCgroup, listVmCgroups, placeInCgroup, type VmCgroup } from '../../src/host/cgroups/vm-cgroup.ts';

const MIB = 1024 * 1024;
const skip = await realCgroupSkipReason();

/** utime + stime of processes, in seconds (USER_HZ is 100 on Linux). */
function cpuSeconds(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    ticks += Number(fields[11]) + Number(fields[12]);
  }
  return ticks / 100;
}

function read(cgroup: VmCgroup, controller: 'cpu' | 'memory', file: string): string {
  return readFileSync(join(cgroup.dirs[controller], file), 'utf8').trim();
}

describe('VM cgroups on this host (real)', { skip }, () => {
  let area: TestCgroupArea;
  const children: ChildProcess[] = [];

  before(async () => {
    area = await testCgroupArea('vmcg');
  });

  afterEach(() => {
    for (const child of children.splice(0)) {
      if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
        try {
          process.kill(-child.pid, 'SIGKILL');
        } catch {
          child.kill('SIGKILL');
        }
      }
    }
  });

  after(async () => {
    await area?.cleanup();
  });

  /** A child in its own process group that waits for a line on stdin, then runs `script` (sh). */
  function waitingChild(script: string): ChildProcess & { pid: number } {
    const child = spawn('sh', ['-c', `read go; ${script}`], { stdio: ['pipe', 'ignore', 'pipe'], detached: true });
    children.push(child);
    assert.ok(child.pid !== undefined);
    return child as ChildProcess & { pid: number };
  }

  test('create, put a real process in it, read the limits back, see it in /proc/PID/cgroup, remove', async () => {
    const cgroup = await createVmCgroup({ name: 'seat-1', vcpus: 2, memoryMb: 256, overheadMb: 32 }, area.placement);
    const v = cgroup.version;
    if (v === 1) {
      assert.equal(read(cgroup, 'cpu', 'cpu.cfs_period_us'), '100000');
      assert.equal(read(cgroup, 'cpu', 'cpu.cfs_quota_us'), '200000');
      assert.equal(read(cgroup, 'memory', 'memory.limit_in_bytes'), String(288 * MIB));
      if (existsSync(join(cgroup.dirs.memory, 'memory.memsw.limit_in_bytes'))) {
        assert.equal(read(cgroup, 'memory', 'memory.memsw.limit_in_bytes'), String(288 * MIB));
      }
    } else {
      assert.equal(read(cgroup, 'cpu', 'cpu.max'), '200000 100000');
      assert.equal(read(cgroup, 'memory', 'memory.max'), String(288 * MIB));
      if (existsSync(join(cgroup.dirs.memory, 'memory.swap.max'))) assert.equal(read(cgroup, 'memory', 'memory.swap.max'), '0');
    }

    const child = spawn('sleep', ['60'], { stdio: 'ignore' });
    children.push(child);
    assert.ok(child.pid !== undefined);
    await cgroup.addProcess(child.pid);
    assert.deepEqual(cgroupPathsOf(await readProcessCgroups(child.pid), area.layout), cgroup.paths, '/proc/PID/cgroup');
    assert.deepEqual(await cgroup.pids(), [child.pid]);
    assert.equal(await cgroup.contains(child.pid), true);
    assert.equal(await cgroup.contains(process.pid), false);
    assert.ok((await listVmCgroups(area.placement)).includes('seat-1'));

    const refused = await cgroup.remove({ timeoutMs: 200 }).then(
      () => assert.fail('a cgroup with a live process cannot be removed'),
      (e: unknown) => e,
    );
    assert.ok(refused instanceof CgroupError);
    assert.equal(refused.code, 'EBUSY');
    assert.match(refused.message, new RegExp(`processes still in it: ${child.pid}`));

    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
    await cgroup.remove();
    for (const dir of Object.values(cgroup.dirs)) assert.equal(existsSync(dir), false, `${dir} removed`);
    assert.ok(!(await listVmCgroups(area.placement)).includes('seat-1'));
    await cgroup.remove(); // already gone
  });

  test('the memory limit holds: a process allocating past 64 MiB is OOM-killed', async () => {
    const cgroup = await createVmCgroup({ name: 'oom', vcpus: 1, memoryMb: 64, overheadMb: 0 }, area.placement);
    const hog = 'const keep = []; for (let i = 0; i < 1024; i++) keep.push(Buffer.alloc(1 << 20, 1)); console.log("survived");';
    const child = waitingChild(`exec "${process.execPath}" -e '${hog}'`);
    let stderr = '';
    child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
    const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
    await cgroup.addProcess(child.pid); // before it allocates anything
    child.stdin?.end('go\n');
    const [code, signal] = await exited;
    assert.equal(signal, 'SIGKILL', `killed by the OOM killer, not exit ${code} (${stderr.trim()})`);
    const events = cgroup.version === 1 ? read(cgroup, 'memory', 'memory.oom_control') : read(cgroup, 'memory', 'memory.events');
    assert.match(events, /oom_kill [1-9]/, events);
    if (cgroup.version === 1) assert.ok(Number(read(cgroup, 'memory', 'memory.max_usage_in_bytes')) <= 64 * MIB);
    await cgroup.remove();
  });

  test(
    'the CPU limit holds: three busy loops in a 1-CPU cgroup use at most one CPU',
    { skip: availableParallelism() < 2 ? 'needs 2 CPUs' : undefined },
    async () => {
      const cgroup = await createVmCgroup({ name: 'cpu', vcpus: 1, memoryMb: 64 }, area.placement);
      const child = waitingChild('(while :; do :; done) & (while :; do :; done) & while :; do :; done');
      await cgroup.addProcess(child.pid);
      child.stdin?.end('go\n');
      // sh forks the loops from inside the throttled cgroup: give it time on a loaded machine.
      let pids = await cgroup.pids();
      for (let waited = 0; pids.length < 3 && waited < 5_000; waited += 50) {
        await sleep(50);
        pids = await cgroup.pids();
      }
      assert.equal(pids.length, 3, 'the loops inherited the cgroup');
      const before = cpuSeconds(pids);
      const started = process.hrtime.bigint();
      await sleep(1_500);
      const used = cpuSeconds(pids) - before;
      const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
      process.kill(-child.pid, 'SIGKILL');
      // USER_HZ ticks are coarse: allow 0.15 s (and 10 %) of slack on top of one CPU.
      assert.ok(used <= elapsed * 1.1 + 0.15, `used ${used.toFixed(2)} CPU-s in ${elapsed.toFixed(2)} s`);
      await cgroup.remove({ timeoutMs: 5_000 });
    },
  );

  test('an existing cgroup is taken over with the new limits, up or down', async () => {
    const limitFile = area.layout.version === 1 ? 'memory.limit_in_bytes' : 'memory.max';
    await createVmCgroup({ name: 'resize', vcpus: 1, memoryMb: 64 }, area.placement);
    const bigger = await createVmCgroup({ name: 'resize', vcpus: 3, memoryMb: 256 }, area.placement);
    assert.equal(read(bigger, 'memory', limitFile), String(256 * MIB));
    if (area.layout.version === 1 && existsSync(join(bigger.dirs.memory, 'memory.memsw.limit_in_bytes'))) {
      assert.equal(read(bigger, 'memory', 'memory.memsw.limit_in_bytes'), String(256 * MIB), 'memsw raised first');
    }
    assert.equal(
      read(bigger, 'cpu', area.layout.version === 1 ? 'cpu.cfs_quota_us' : 'cpu.max'),
      area.layout.version === 1 ? '300000' : '300000 100000',
    );
    const smaller = await createVmCgroup({ name: 'resize', vcpus: 1, memoryMb: 32 }, area.placement);
    assert.equal(read(smaller, 'memory', limitFile), String(32 * MIB));
    await smaller.remove();
  });

  test("the VMs' CPU weight is written on their parent cgroup (v1 cpu.shares, v2 cpu.weight)", async () => {
    const cgroup = await createVmCgroup({ name: 'weighted', vcpus: 1, memoryMb: 64 }, { ...area.placement, cpuWeight: 25 });
    const parentDir = dirname(cgroup.dirs.cpu);
    const v2 = existsSync(join(parentDir, 'cpu.weight'));
    assert.equal(readFileSync(join(parentDir, v2 ? 'cpu.weight' : 'cpu.shares'), 'utf8').trim(), v2 ? '25' : '256');
    await cgroup.remove();
  });

  test('placeInCgroup (what the QEMU driver would call right after spawning)', async () => {
    const child = spawn('sleep', ['60'], { stdio: 'ignore' });
    children.push(child);
    assert.ok(child.pid !== undefined);
    const cgroup = await placeInCgroup(child.pid, { name: 'qemu-seat', vcpus: 1, memoryMb: 128, overheadMb: 128 }, area.placement);
    assert.equal(await cgroup.contains(child.pid), true);
    const exited = once(child, 'exit');
    child.kill('SIGKILL');
    await exited;
    await cgroup.remove();
    assert.equal(await cgroup.exists(), false);
  });

  test('placeInCgroup with a pid that does not exist: fails naming the file, leaves no cgroup', async () => {
    await assert.rejects(placeInCgroup(2 ** 22 + 7, { name: 'ghost', vcpus: 1, memoryMb: 64 }, area.placement), (error: unknown) => {
      assert.ok(error instanceof CgroupError);
      assert.match(error.message, /cannot write "4194311" to .*ghost\/cgroup.procs/);
      return true;
    });
    assert.ok(!(await listVmCgroups(area.placement)).includes('ghost'));
  });
});
