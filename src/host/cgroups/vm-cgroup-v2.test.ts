// cgroup v2 logic against a fake cgroup tree (test/support/cgroups/fake-cgroupfs.ts): what is written where.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { CgroupError } from './errors.ts';
import { readProcessCgroups } from './detect.ts';
import { createFakeCgroupV2, type FakeCgroupV2 } from '../../../test/support/cgroups/fake-cgroupfs.ts';
import { ensureParentCgroup, isSettingSupported, resolvePlacement, type CgroupPlacement } from './placement.ts';
import { createVmCgroup, listVmCgroups, openVmCgroup, placeInCgroup, removeVmCgroup } from './vm-cgroup.ts';

const MIB = 1024 * 1024;

describe('VM cgroups on cgroup v2 (fake tree)', () => {
  let dir: string;
  let fake: FakeCgroupV2;
  let placement: CgroupPlacement;

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cg-v2-'));
    fake = createFakeCgroupV2(dir);
    placement = { detect: { root: fake.root, mountinfoPath: fake.mountinfoPath } };
  });

  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('create: enables cpu and memory from the root down to clarateach/, writes cpu.max and memory.max in the leaf', async () => {
    const cgroup = await createVmCgroup({ name: 'my-test-1-abcd1234', vcpus: 2, memoryMb: 512, overheadMb: 64 }, placement);
    const leaf = join(fake.root, 'clarateach', 'my-test-1-abcd1234');
    assert.equal(cgroup.version, 2);
    assert.deepEqual(cgroup.dirs, { cpu: leaf, memory: leaf });
    assert.deepEqual(cgroup.paths, { cpu: '/clarateach/my-test-1-abcd1234', memory: '/clarateach/my-test-1-abcd1234' });
    assert.equal(fake.read(join(fake.root, 'cgroup.subtree_control')), '+cpu +memory');
    assert.equal(fake.read(join(fake.root, 'clarateach', 'cgroup.subtree_control')), '+cpu +memory');
    assert.equal(fake.read(join(leaf, 'cpu.max')), '200000 100000');
    assert.equal(fake.read(join(leaf, 'memory.max')), String(576 * MIB));
    assert.equal(fake.read(join(leaf, 'memory.swap.max')), undefined, 'no swap file in this cgroup: not written');
    assert.equal(fake.read(join(leaf, 'cgroup.subtree_control')), undefined, 'nothing enabled below the leaf');
  });

  test("the VMs' CPU weight goes on the parent cgroup; one out of range is refused", async () => {
    await createVmCgroup({ name: 'seat-w', vcpus: 1, memoryMb: 64 }, { ...placement, cpuWeight: 12 });
    assert.equal(fake.read(join(fake.root, 'clarateach', 'cpu.weight')), '12');
    assert.equal(fake.read(join(fake.root, 'clarateach', 'seat-w', 'cpu.weight')), undefined, 'each VM keeps the default among the VMs');
    await assert.rejects(resolvePlacement({ ...placement, cpuWeight: 0 }), /CPU weight must be an integer in 1..10000, got 0/);
  });

  test('controllers already enabled (as systemd leaves the root): subtree_control is not written again', async () => {
    const enabled = 'cpuset cpu io memory pids\n';
    writeFileSync(join(fake.root, 'cgroup.subtree_control'), enabled);
    fake.kernelMkdir(join(fake.root, 'clarateach'));
    writeFileSync(join(fake.root, 'clarateach', 'cgroup.subtree_control'), 'cpu memory\n');
    await createVmCgroup({ name: 'seat-1', vcpus: 1, memoryMb: 128 }, placement);
    assert.equal(fake.read(join(fake.root, 'cgroup.subtree_control')), enabled);
    assert.equal(fake.read(join(fake.root, 'clarateach', 'cgroup.subtree_control')), 'cpu memory\n');
  });

  test('memory.swap.max 0 where the kernel has it; the existing cgroup is taken over', async () => {
    const leaf = join(fake.root, 'clarateach', 'seat-2');
    writeFileSync(join(fake.root, 'cgroup.subtree_control'), 'cpu memory\n');
    fake.kernelMkdir(join(fake.root, 'clarateach'));
    writeFileSync(join(fake.root, 'clarateach', 'cgroup.subtree_control'), 'cpu memory\n');
    fake.kernelMkdir(leaf);
    const cgroup = await createVmCgroup({ name: 'seat-2', vcpus: 4, memoryMb: 2048, overheadMb: 128 }, placement);
    assert.equal(fake.read(join(leaf, 'cpu.max')), '400000 100000');
    assert.equal(fake.read(join(leaf, 'memory.max')), String(2176 * MIB));
    assert.equal(fake.read(join(leaf, 'memory.swap.max')), '0');
    const resolved = await resolvePlacement(placement);
    assert.equal(await isSettingSupported(resolved, { controller: 'memory', file: 'memory.swap.max', value: '0', optional: true }), true);
    assert.equal(await cgroup.exists(), true);
  });

  test('addProcess writes cgroup.procs; pids / contains read it; list and remove', async () => {
    const cgroup = await createVmCgroup({ name: 'seat-3', vcpus: 1, memoryMb: 256 }, placement);
    await cgroup.addProcess(4242);
    assert.equal(fake.read(join(cgroup.dirs.cpu, 'cgroup.procs')), '4242');
    assert.deepEqual(await cgroup.pids(), [4242]);
    assert.equal(await cgroup.contains(4242), true);
    assert.equal(await cgroup.contains(4243), false);
    await createVmCgroup({ name: 'seat-4', vcpus: 1, memoryMb: 256 }, placement);
    assert.deepEqual(await listVmCgroups(placement), ['seat-3', 'seat-4']);

    // Not removable while it still lists a process: the error names the directory and the pid.
    const error = await cgroup.remove({ timeoutMs: 100 }).then(
      () => assert.fail('expected a rejection'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof CgroupError);
    assert.equal(error.file, cgroup.dirs.cpu);
    assert.match(error.message, /cannot remove cgroup .*seat-3.*processes still in it: 4242/);

    fake.kernelEmpty(cgroup.dirs.cpu);
    await cgroup.remove();
    assert.equal(existsSync(cgroup.dirs.cpu), false);
    await cgroup.remove(); // already gone: fine
    fake.kernelEmpty(join(fake.root, 'clarateach', 'seat-4'));
    await removeVmCgroup('seat-4', placement);
    assert.deepEqual(await listVmCgroups(placement), []);
    assert.deepEqual(await (await openVmCgroup('seat-4', placement)).pids(), [], 'a cgroup that is gone has no processes');
  });

  test('placeInCgroup: creates, limits and adds the process', async () => {
    const cgroup = await placeInCgroup(777, { name: 'qemu-seat-5', vcpus: 2, memoryMb: 1024, overheadMb: 256 }, placement);
    assert.equal(fake.read(join(cgroup.dirs.memory, 'memory.max')), String(1280 * MIB));
    assert.equal(fake.read(join(cgroup.dirs.memory, 'cgroup.procs')), '777');
  });

  test('a write the kernel refuses: the error names the file and the value', async () => {
    const leaf = join(fake.root, 'clarateach', 'seat-6');
    mkdirSync(join(leaf, 'memory.max'), { recursive: true }); // cannot be written
    await assert.rejects(createVmCgroup({ name: 'seat-6', vcpus: 1, memoryMb: 100 }, placement), (error: unknown) => {
      assert.ok(error instanceof CgroupError);
      assert.equal(error.file, join(leaf, 'memory.max'));
      assert.equal(error.value, String(100 * MIB));
      assert.match(error.message, new RegExp(`cannot write "${100 * MIB}" to .*seat-6/memory.max: .*EISDIR`));
      return true;
    });
    assert.equal(existsSync(leaf), true, 'a cgroup that already existed is left alone');
  });

  test('sizes that make no limit are refused before anything is created', async () => {
    await ensureParentCgroup(placement);
    await assert.rejects(createVmCgroup({ name: 'seat-7', vcpus: 1, memoryMb: 0 }, placement), /memoryMb/);
    await assert.rejects(createVmCgroup({ name: 'seat-7', vcpus: 0, memoryMb: 64 }, placement), /vcpus/);
    assert.equal(existsSync(join(fake.root, 'clarateach', 'seat-7')), false);
  });

  test('controllers missing from cgroup.controllers: a clear error', async () => {
    const other = createFakeCgroupV2(join(dir, 'other'), { controllers: 'cpu io pids' });
    await assert.rejects(
      createVmCgroup({ name: 'seat-8', vcpus: 1, memoryMb: 64 }, { layout: other.layout }),
      /controller memory not available in .*cgroup.controllers \("cpu io pids"\)/,
    );
  });

  test('refuses names and parents that are not one plain path', async () => {
    await assert.rejects(createVmCgroup({ name: '../escape', vcpus: 1, memoryMb: 64 }, placement), /invalid cgroup name/);
    await assert.rejects(createVmCgroup({ name: 'a/b', vcpus: 1, memoryMb: 64 }, placement), /invalid cgroup name/);
    await assert.rejects(resolvePlacement({ ...placement, parent: '/abs' }), /relative path/);
    await assert.rejects(resolvePlacement({ ...placement, parent: 'a/../b' }), /relative path/);
  });

  test("relativeTo self: below this process's own cgroup", async () => {
    const own = (await readProcessCgroups('self')).unified ?? '/';
    const resolved = await resolvePlacement({ ...placement, relativeTo: 'self', parent: 'vms' });
    assert.equal(resolved.parentDirs.cpu, join(fake.root, own, 'vms'));
  });
});
