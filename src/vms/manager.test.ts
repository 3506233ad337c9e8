// The lifecycle's logic against real processes, real files and a real SQLite file. The VMM is a
// stand-in process (a sleeping node) and the network an in-memory one: the integration tests run
// the same paths with QEMU and real TAPs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { VmManager } from './manager.ts';
import { MemoryNetwork, spawnStandIn, StandInDriver, testPorts } from '../../test/support/stand-ins.ts';
import { VmStore } from '../store/vm-store.ts';
import { VmError } from './errors.ts';
import { findProcessesUnder, isProcessAlive, killProcess } from '../host/process.ts';

interface Fixture {
  dir: string;
  stateDir: string;
  imagesDir: string;
  network: MemoryNetwork;
  driver: StandInDriver;
  manager: (store?: VmStore) => VmManager;
  store: VmStore;
}

async function withFixture(fn: (f: Fixture) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ct-manager-'));
  const stateDir = join(dir, 'state');
  const imagesDir = join(dir, 'images');
  mkdirSync(imagesDir, { recursive: true });
  for (const f of ['vmlinux', 'initrd.img', 'rootfs.ext4']) writeFileSync(join(imagesDir, f), 'x');
  const network = new MemoryNetwork();
  const driver = new StandInDriver();
  const store = new VmStore(join(stateDir, 'agent.db'));
  const make = (s: VmStore = store): VmManager =>
    new VmManager({
      ports: testPorts({ store: s, driver, network, imagesDir }),
      log: pino({ level: 'silent' }),
      stateDir,
      capacity: 5,
      vmDiskMb: 256,
      gracefulStopMs: 100,
    });
  try {
    await fn({ dir, stateDir, imagesDir, network, driver, manager: make, store });
  } finally {
    for (const { proc } of await findProcessesUnder(stateDir)) await killProcess(proc);
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

test('create boots a VM with its own TAP and writable layer; delete removes all of it', async () => {
  await withFixture(async ({ manager, network, driver }) => {
    const m = manager();
    const vm = await m.create({ workshopId: 'ws', seatId: 1, vcpus: 1, memoryMb: 256, template: 'default' });
    assert.equal(vm.status, 'running');
    assert.equal(vm.ip, '192.168.100.11');
    assert.ok(network.taps.has(vm.tapName));
    const spec = driver.started[0];
    assert.ok(spec && existsSync(spec.layerDiskPath));
    // Sparse: the layer occupies far less than its apparent size.
    assert.ok(statSync(spec.layerDiskPath).blocks * 512 < 64 * 1024 * 1024);
    assert.match(spec.kernelArgs, /ip=192\.168\.100\.11::192\.168\.100\.1:255\.255\.255\.0:seat-1:eth0:off/);
    const proc = { pid: vm.pid ?? -1, startTime: vm.pidStartTime ?? -1 };
    assert.ok(isProcessAlive(proc));

    await m.delete('ws', 1);
    assert.ok(!isProcessAlive(proc));
    assert.ok(!network.taps.has(vm.tapName));
    assert.ok(!existsSync(spec.runDir));
    assert.throws(
      () => m.get('ws', 1),
      (e: unknown) => e instanceof VmError && e.code === 'vm_not_found',
    );
  });
});

test('a create that fails part-way leaves no TAP, directory, process or record', async () => {
  await withFixture(async ({ manager, network, driver, stateDir }) => {
    const m = manager();
    driver.failNext = 'qemu: could not load kernel';
    await assert.rejects(
      m.create({ workshopId: 'ws', seatId: 2, vcpus: 1, memoryMb: 256, template: 'default' }),
      (e: unknown) => e instanceof VmError && e.code === 'create_failed' && /could not load kernel/.test(e.message),
    );
    assert.equal(m.count(), 0);
    assert.equal(network.taps.size, 0);
    assert.deepEqual(existsSync(join(stateDir, 'vms')) ? readdirSync(join(stateDir, 'vms')) : [], []);
    assert.deepEqual(await findProcessesUnder(stateDir), []);
  });
});

test('a missing image fails the create with a hint and leaves nothing', async () => {
  await withFixture(async ({ manager, network, imagesDir }) => {
    rmSync(join(imagesDir, 'vmlinux'));
    await assert.rejects(
      manager().create({ workshopId: 'ws', seatId: 1, vcpus: 1, memoryMb: 256, template: 'default' }),
      /vmlinux is missing: run clarateach image build/,
    );
    assert.equal(network.taps.size, 0);
  });
});

test('the same seat created twice at once yields one VM and one vm_exists', async () => {
  await withFixture(async ({ manager }) => {
    const m = manager();
    const results = await Promise.allSettled(
      [1, 2].map(() => m.create({ workshopId: 'ws', seatId: 3, vcpus: 1, memoryMb: 256, template: 'default' })),
    );
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    const rejected = results.find((r) => r.status === 'rejected');
    assert.ok(rejected && rejected.status === 'rejected' && rejected.reason instanceof VmError && rejected.reason.code === 'vm_exists');
    assert.equal(m.count(), 1);
  });
});

test('reconcile adopts live VMMs, reboots dead ones from their kept disk, and removes orphans', async () => {
  await withFixture(async ({ manager, network, driver, stateDir, store }) => {
    const m = manager();
    const alive = await m.create({ workshopId: 'ws', seatId: 1, vcpus: 1, memoryMb: 256, template: 'default' });
    const dead = await m.create({ workshopId: 'ws', seatId: 2, vcpus: 1, memoryMb: 256, template: 'default' });
    const deadSpec = m.launchSpec(dead);
    writeFileSync(join(deadSpec.runDir, 'learner-file'), 'kept');
    const layerBefore = statSync(deadSpec.layerDiskPath).ino;
    await killProcess({ pid: dead.pid ?? -1, startTime: dead.pidStartTime ?? -1 });
    // Debris no VM owns: a TAP, a directory with a process, and an interrupted create.
    network.taps.add('ct0a0b0c0d');
    const strayDir = join(stateDir, 'vms', 'ct0a0b0c0e');
    mkdirSync(strayDir, { recursive: true });
    const stray = spawnStandIn(strayDir);
    const interrupted = store.reserve(
      { workshopId: 'ws', seatId: 3, vcpus: 1, memoryMb: 256, hypervisor: 'qemu', template: 'default', buildId: '' },
      { capacity: 10, memoryBudgetMb: 1e9 },
      {
        allocate: () => 3232261220,
        ipText: () => '192.168.100.100',
        mac: () => '06:00:c0:a8:64:64',
        tapName: () => 'ctc0a86464',
      },
      1,
    );
    assert.ok(interrupted.ok);
    network.taps.add('ctc0a86464');

    const restarted = manager(store);
    const startsBefore = driver.started.length;
    await restarted.reconcile();

    assert.equal(restarted.get('ws', 1).pid, alive.pid, 'live VMM adopted, not restarted');
    const rebooted = restarted.get('ws', 2);
    assert.equal(rebooted.status, 'running');
    assert.equal(rebooted.restarts, 1);
    assert.notEqual(rebooted.pid, dead.pid);
    assert.equal(statSync(deadSpec.layerDiskPath).ino, layerBefore, 'disk kept');
    assert.equal(driver.started.length, startsBefore + 1);
    assert.throws(() => restarted.get('ws', 3));
    assert.deepEqual([...network.taps].sort(), [alive.tapName, dead.tapName].sort());
    assert.equal(existsSync(strayDir), false);
    assert.equal(isProcessAlive(stray), false);
  });
});

test('the watchdog boots again a VM whose VMM died while the agent runs', async () => {
  await withFixture(async ({ manager }) => {
    const m = manager();
    const vm = await m.create({ workshopId: 'ws', seatId: 1, vcpus: 1, memoryMb: 256, template: 'default' });
    await killProcess({ pid: vm.pid ?? -1, startTime: vm.pidStartTime ?? -1 });
    await m.watch();
    const after = m.get('ws', 1);
    assert.equal(after.restarts, 1);
    assert.ok(isProcessAlive({ pid: after.pid ?? -1, startTime: after.pidStartTime ?? -1 }));
  });
});

test('stop keeps the disk, TAP and record; nothing boots it again until start, which uses the same layer', async () => {
  await withFixture(async ({ manager, network, driver, store }) => {
    const m = manager();
    const vm = await m.create({ workshopId: 'ws', seatId: 1, vcpus: 1, memoryMb: 256, template: 'default' });
    const spec = m.launchSpec(vm);
    writeFileSync(join(spec.runDir, 'learner-file'), 'kept');
    const layer = statSync(spec.layerDiskPath).ino;
    const proc = { pid: vm.pid ?? -1, startTime: vm.pidStartTime ?? -1 };

    const stopped = await m.stop('ws', 1);
    assert.equal(stopped.status, 'stopped');
    assert.equal(stopped.pid, null);
    assert.ok(!isProcessAlive(proc));
    assert.ok(network.taps.has(vm.tapName), 'TAP kept');
    assert.equal((await m.stop('ws', 1)).status, 'stopped', 'stopping again does nothing');

    // Neither the watchdog nor an agent restart boots a stopped VM.
    const starts = driver.started.length;
    await m.watch();
    const restarted = manager(store);
    await restarted.reconcile();
    assert.equal(restarted.get('ws', 1).status, 'stopped');
    assert.equal(driver.started.length, starts);
    assert.ok(existsSync(join(spec.runDir, 'learner-file')), 'the reconcile left its directory alone');

    const started = await restarted.start('ws', 1);
    assert.equal(started.status, 'running');
    assert.equal(started.ip, vm.ip);
    assert.equal(started.readyAt, null, 'ready again only once its services answer');
    assert.ok(isProcessAlive({ pid: started.pid ?? -1, startTime: started.pidStartTime ?? -1 }));
    assert.equal(driver.started.at(-1)?.layerDiskPath, spec.layerDiskPath);
    assert.equal(statSync(spec.layerDiskPath).ino, layer, 'same writable layer');
    assert.equal((await restarted.start('ws', 1)).pid, started.pid, 'starting a running VM does nothing');
  });
});

test('a start that fails leaves the VM stopped with the reason; stop and start refuse a VM in another state', async () => {
  await withFixture(async ({ manager, driver, store }) => {
    const m = manager();
    await m.create({ workshopId: 'ws', seatId: 1, vcpus: 1, memoryMb: 256, template: 'default' });
    await m.stop('ws', 1);
    driver.failNext = 'no vmm today';
    await assert.rejects(
      m.start('ws', 1),
      (e: unknown) => e instanceof VmError && e.code === 'start_failed' && /no vmm today/.test(e.message),
    );
    const after = m.get('ws', 1);
    assert.equal(after.status, 'stopped');
    assert.match(after.lastError ?? '', /^start failed: .*no vmm today/);
    assert.equal((await m.start('ws', 1)).status, 'running', 'a second start works');

    await m.create({ workshopId: 'ws', seatId: 2, vcpus: 1, memoryMb: 256, template: 'default' });
    store.markFailed('ws', 2, 'the guest crashed');
    const busy = (e: unknown): boolean => e instanceof VmError && e.code === 'vm_busy' && /failed/.test(e.message);
    await assert.rejects(m.stop('ws', 2), busy);
    await assert.rejects(m.start('ws', 2), busy);
    await assert.rejects(m.stop('ws', 9), (e: unknown) => e instanceof VmError && e.code === 'vm_not_found');
  });
});

test('a create that failed and could not clean up is removed by the next start, not booted', async () => {
  await withFixture(async ({ manager, network, driver, store }) => {
    const m = manager();
    driver.failNext = 'qemu: no kernel';
    network.failNextDetach = 'Device or resource busy';
    await assert.rejects(m.create({ workshopId: 'ws', seatId: 1, vcpus: 1, memoryMb: 256, template: 'default' }), /no kernel/);
    assert.equal(m.get('ws', 1).status, 'failed');
    assert.equal(network.taps.size, 1, 'its TAP is left behind');

    const restarted = manager(store);
    const startsBefore = driver.started.length;
    await restarted.reconcile();
    assert.throws(() => restarted.get('ws', 1), 'the record is gone');
    assert.equal(driver.started.length, startsBefore, 'no VMM booted for it');
    assert.equal(network.taps.size, 0, 'its TAP removed');
  });
});

test('a stop is never undone: not by an agent that died during it, nor by a step failing after the VMM was killed', async () => {
  await withFixture(async ({ manager, driver, store }) => {
    const m = manager();
    const first = await m.create({ workshopId: 'ws', seatId: 1, vcpus: 1, memoryMb: 256, template: 'default' });
    const second = await m.create({ workshopId: 'ws', seatId: 2, vcpus: 1, memoryMb: 256, template: 'default' });
    const startsBefore = driver.started.length;

    // The agent dies right after it began stopping seat 1: its VMM still runs.
    store.markStopRequested('ws', 1);
    const restarted = manager(store);
    await restarted.reconcile();
    const stopped = restarted.get('ws', 1);
    assert.equal(stopped.status, 'stopped');
    assert.equal(stopped.pid, null);
    assert.equal(isProcessAlive({ pid: first.pid ?? -1, startTime: first.pidStartTime ?? -1 }), false, 'its VMM is gone');

    // The stop of seat 2 kills its VMM, then a later step fails.
    driver.failNextStop = 'cgroup busy';
    assert.equal((await restarted.stop('ws', 2)).status, 'stopped');
    assert.equal(isProcessAlive({ pid: second.pid ?? -1, startTime: second.pidStartTime ?? -1 }), false);
    await restarted.watch();
    assert.equal(restarted.get('ws', 2).status, 'stopped', 'the watchdog leaves it stopped');
    assert.equal(driver.started.length, startsBefore, 'neither was booted again');
  });
});

test('capacity is enforced with at_capacity', async () => {
  await withFixture(async ({ manager }) => {
    const m = manager();
    await Promise.all(
      [1, 2, 3, 4, 5].map((seat) => m.create({ workshopId: 'ws', seatId: seat, vcpus: 1, memoryMb: 256, template: 'default' })),
    );
    await assert.rejects(
      m.create({ workshopId: 'ws', seatId: 6, vcpus: 1, memoryMb: 256, template: 'default' }),
      (e: unknown) => e instanceof VmError && e.code === 'at_capacity',
    );
  });
});

test('a teardown that fails keeps the record, says why, and a second DELETE finishes the job', async () => {
  await withFixture(async ({ manager, network, driver }) => {
    const m = manager();
    await m.create({ workshopId: 'ws', seatId: 1, vcpus: 1, memoryMb: 256, template: 'default' });
    network.failNextDetach = 'Device or resource busy';
    await assert.rejects(
      m.delete('ws', 1),
      (e: unknown) => e instanceof VmError && e.code === 'delete_failed' && /remove tap: Device or resource busy/.test(e.message),
    );
    assert.equal(m.get('ws', 1).status, 'deleting');
    await m.delete('ws', 1);
    assert.equal(m.count(), 0);
    assert.equal(network.taps.size, 0);

    // The same for a create whose cleanup fails: the record stays, failed, with both reasons.
    driver.failNext = 'qemu: no kernel';
    network.failNextDetach = 'Device or resource busy';
    await assert.rejects(m.create({ workshopId: 'ws', seatId: 2, vcpus: 1, memoryMb: 256, template: 'default' }), /no kernel/);
    const left = m.get('ws', 2);
    assert.equal(left.status, 'failed');
    assert.match(left.lastError ?? '', /no kernel; cleanup: remove tap: Device or resource busy/);
    await m.delete('ws', 2);
    assert.equal(network.taps.size, 0);
  });
});
