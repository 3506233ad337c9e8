// The Firecracker driver with real cgroups (root): the VMM is held to the VM's CPU and memory in
// a cgroup of its own, removed on stop, and the orphan sweep removes the cgroups no VM owns. Runs
// against the stand-in Firecracker (test/support/firecracker/fake-firecracker.ts).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, afterEach, before, beforeEach, describe, test } from 'node:test';
import { cgroupPathsOf, listVmCgroups, openVmCgroup, readProcessCgroups, type CgroupPlacement } from '../../src/host/cgroups/index.ts';
import { processStartTime } from '../../src/host/process.ts';
import { firecrackerInstanceId } from '../../src/hypervisors/firecracker/command.ts';
import { createFirecrackerDriver } from '../../src/hypervisors/firecracker/index.ts';
import { realCgroupSkipReason, testCgroupArea, type TestCgroupArea } from '../support/cgroups/test-cgroups.ts';
import { createVmFixture, type VmFixture } from '../support/firecracker/fixtures.ts';

/** Node + tsx start in a few hundred ms; leave room on a loaded CI machine. */
const SOCKET_TIMEOUT_MS = 20_000;
const MIB = 1024 * 1024;

const cgroupSkip = await realCgroupSkipReason();

function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

function descendsFrom(pid: number, ancestor: number): boolean {
  for (let p = parentOf(pid); p !== undefined && p > 1; p = parentOf(p)) if (p === ancestor) return true;
  return false;
}

describe('Firecracker driver with real cgroups', () => {
  let fx: VmFixture;
  let area: TestCgroupArea | undefined;
  let cgroup: CgroupPlacement | false = false;

  before(async () => {
    if (cgroupSkip) return;
    area = await testCgroupArea('fcdrv');
    cgroup = area.placement;
  });

  after(async () => {
    await area?.cleanup();
  });

  beforeEach(async () => {
    fx = await createVmFixture('my-test.1');
  });

  afterEach(async () => {
    await fx.cleanup();
  });

  test("the VMM runs in a cgroup of its own with the VM's CPU and memory limits; stop removes it", { skip: cgroupSkip }, async () => {
    assert.ok(area && cgroup);
    const driver = await createFirecrackerDriver({
      firecrackerBin: fx.fakeFirecracker(),
      apiSocketTimeoutMs: SOCKET_TIMEOUT_MS,
      cgroup,
      cgroupOverheadMb: 32,
    });
    const proc = await driver.start(fx.spec);
    const vmCgroup = await openVmCgroup(firecrackerInstanceId('my-test.1'), cgroup);
    try {
      assert.deepEqual(await listVmCgroups(cgroup), [vmCgroup.name]);
      const members = await vmCgroup.pids();
      assert.ok(members.includes(proc.pid), 'the VMM is in it');
      // Besides the VMM only its own children (the stand-in's esbuild service, when tsx compiles).
      for (const pid of members) assert.ok(pid === proc.pid || descendsFrom(pid, proc.pid), `pid ${pid} in the VM's cgroup`);
      assert.deepEqual(cgroupPathsOf(await readProcessCgroups(proc.pid), area.layout), vmCgroup.paths, '/proc/PID/cgroup');
      const read = (controller: 'cpu' | 'memory', file: string): string =>
        readFileSync(join(vmCgroup.dirs[controller], file), 'utf8').trim();
      if (area.layout.version === 1) {
        assert.equal(read('cpu', 'cpu.cfs_quota_us'), '200000', '2 vCPUs');
        assert.equal(read('cpu', 'cpu.cfs_period_us'), '100000');
        assert.equal(read('memory', 'memory.limit_in_bytes'), String((512 + 32) * MIB), 'memory_mb + overhead');
      } else {
        assert.equal(read('cpu', 'cpu.max'), '200000 100000');
        assert.equal(read('memory', 'memory.max'), String((512 + 32) * MIB));
      }
    } finally {
      await driver.stop(fx.spec, proc, 10_000);
    }
    assert.equal(await vmCgroup.exists(), false, 'cgroup removed');
    assert.deepEqual(await listVmCgroups(cgroup), []);
  });

  test('reconcile: the VMM and cgroup of a VM that is no longer kept are removed, a kept one untouched', { skip: cgroupSkip }, async () => {
    assert.ok(cgroup);
    const driver = await createFirecrackerDriver({
      firecrackerBin: fx.fakeFirecracker(),
      apiSocketTimeoutMs: SOCKET_TIMEOUT_MS,
      cgroup,
      cgroupOverheadMb: 32,
    });
    assert.ok(driver.reclaim);
    const proc = await driver.start(fx.spec);
    try {
      await driver.reclaim(new Set(['my-test.1']));
      assert.equal(driver.isAlive(proc), true);
      assert.deepEqual(await listVmCgroups(cgroup), [firecrackerInstanceId('my-test.1')]);
      await driver.reclaim(new Set(['another.2']));
      assert.equal(processStartTime(proc.pid), undefined, 'the VMM in the unowned cgroup was killed');
      assert.deepEqual(await listVmCgroups(cgroup), []);
    } finally {
      await driver.stop(fx.spec, proc, 0);
    }
  });
});
