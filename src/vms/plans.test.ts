// The lifecycle's plans as lists: what a create does, what a recovery finds already done and
// skips, and a teardown that runs every step and reports the first failure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { imagePaths } from '../image/layout.ts';
import { hostProcesses, isProcessAlive } from '../host/process.ts';
import { VmStore } from '../store/vm-store.ts';
import { MemoryNetwork, StandInDriver, testPorts } from '../../test/support/stand-ins.ts';
import pino from 'pino';
import { VmManager } from './manager.ts';
import type { VmRecord } from './model.ts';
import { runPlan, runTeardown, stepNames, StepError, type Step } from './plan.ts';
import { bootPlan, networkPlan, teardownPlan } from './plans.ts';

async function withManager(fn: (m: VmManager, driver: StandInDriver, store: VmStore) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ct-plans-'));
  const imagesDir = join(dir, 'images');
  mkdirSync(imagesDir);
  const images = imagePaths(imagesDir);
  for (const f of [images.kernel, images.initrd, images.rootfs]) writeFileSync(f, 'x');
  const store = new VmStore(join(dir, 'state', 'agent.db'));
  const driver = new StandInDriver();
  const network = new MemoryNetwork();
  const manager = new VmManager({
    ports: testPorts({ store, driver, network, imagesDir }),
    log: pino({ level: 'silent' }),
    stateDir: join(dir, 'state'),
    capacity: 4,
    vmDiskMb: 64,
    gracefulStopMs: 100,
  });
  try {
    await fn(manager, driver, store);
  } finally {
    for (const vm of store.list()) await runTeardown(teardownPlan(manager.planContext(vm))).catch(() => undefined);
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function reserve(store: VmStore, network: MemoryNetwork, seatId: number): VmRecord {
  const reserved = store.reserve(
    { workshopId: 'ws', seatId, vcpus: 1, memoryMb: 256, hypervisor: 'qemu', template: 'default', buildId: '' },
    { capacity: 4, memoryBudgetMb: 1e9 },
    network.addressing,
    1,
  );
  assert.ok(reserved.ok);
  return reserved.vm;
}

test('a create is: bridge, tap, vm directory, writable layer, images, vmm — each done once', async () => {
  await withManager(async (m, driver, store) => {
    const vm = reserve(store, new MemoryNetwork(), 1);
    const plan = bootPlan(m.planContext(vm, () => undefined));
    assert.deepEqual(stepNames(plan), ['bridge', 'tap', 'vm directory', 'writable layer', 'images', 'vmm']);
    const report = await runPlan(plan);
    assert.deepEqual(report.done, stepNames(plan));
    assert.deepEqual(report.skipped, []);
    assert.equal(driver.started.length, 1);
  });
});

test('a recovery of a VM whose VMM died keeps its directory and layer and only starts the VMM', async () => {
  await withManager(async (m, driver, store) => {
    const vm = await m.create({ workshopId: 'ws', seatId: 2, vcpus: 1, memoryMb: 256, template: 'default' });
    const proc = { pid: vm.pid ?? -1, startTime: vm.pidStartTime ?? -1 };
    await hostProcesses.kill(proc);
    const report = await runPlan(bootPlan(m.planContext(m.get('ws', 2), (p) => store.markRestarted('ws', 2, p.pid, p.startTime))));
    assert.deepEqual(report.skipped, ['vm directory', 'writable layer']);
    assert.deepEqual(report.done, ['bridge', 'tap', 'images', 'vmm']);
    assert.equal(driver.started.length, 2);
    const again = m.get('ws', 2);
    assert.ok(isProcessAlive({ pid: again.pid ?? -1, startTime: again.pidStartTime ?? -1 }));
  });
});

test('a snapshot whose layer is gone by the time a seat copies it: the seat boots cold, the reason told', async () => {
  await withManager(async (m, driver, store) => {
    const vm = reserve(store, new MemoryNetwork(), 4);
    const fallbacks: string[] = [];
    const gone = join(tmpdir(), 'ct-no-such-snapshot');
    const restore = {
      files: { dir: gone, memoryPath: join(gone, 'memory'), statePath: join(gone, 'state'), layerPath: join(gone, 'layer.img') },
      identity: {
        ip: vm.ip,
        prefixLength: 24,
        gateway: '192.168.100.1',
        mac: vm.mac,
        hostname: 'seat-4',
        dns: [],
        seedHex: '00',
        epochMs: 0,
      },
      onFallback: (reason: string) => fallbacks.push(reason),
    };
    const context = m.planContext(vm, () => undefined, restore);
    const report = await runPlan(bootPlan(context));
    assert.deepEqual(report.done, ['bridge', 'tap', 'vm directory', 'writable layer', 'images', 'vmm']);
    assert.equal(fallbacks.length, 1);
    assert.match(fallbacks[0] ?? '', /layer could not be copied/);
    assert.equal(driver.started.length, 1, 'booted cold');
    assert.ok(existsSync(context.spec.layerDiskPath), 'on a fresh layer');
  });
});

test('a VM whose VMM still runs needs nothing but its network repaired; its boot plan skips the VMM', async () => {
  await withManager(async (m, driver, store) => {
    await m.create({ workshopId: 'ws', seatId: 3, vcpus: 1, memoryMb: 256, template: 'default' });
    const vm = m.get('ws', 3);
    assert.deepEqual(stepNames(networkPlan(m.planContext(vm))), ['bridge', 'tap']);
    const report = await runPlan(bootPlan(m.planContext(vm)));
    assert.deepEqual(report.skipped, ['vm directory', 'writable layer', 'vmm']);
    assert.equal(driver.started.length, 1);
    assert.equal(store.get('ws', 3)?.pid, vm.pid);
  });
});

test('a teardown is: stop vmm, remove tap, remove vm directory', async () => {
  await withManager(async (m) => {
    const vm = await m.create({ workshopId: 'ws', seatId: 1, vcpus: 1, memoryMb: 256, template: 'default' });
    assert.deepEqual(stepNames(teardownPlan(m.planContext(vm))), ['stop vmm', 'remove tap', 'remove vm directory']);
  });
});

test('a teardown runs every step even when some fail, and reports the first failure', async () => {
  const ran: string[] = [];
  const step = (name: string, fails?: string): Step => ({
    name,
    do: async () => {
      ran.push(name);
      if (fails) throw new Error(fails);
    },
  });
  await assert.rejects(
    runTeardown([step('stop vmm'), step('remove tap', 'Device or resource busy'), step('remove vm directory', 'EBUSY')]),
    (e: unknown) => e instanceof StepError && e.step === 'remove tap' && e.message === 'remove tap: Device or resource busy',
  );
  assert.deepEqual(ran, ['stop vmm', 'remove tap', 'remove vm directory']);
});

test('a plan stops at its first failing step and names it', async () => {
  const ran: string[] = [];
  const steps: Step[] = [
    { name: 'a', do: async () => void ran.push('a') },
    { name: 'b', needed: async () => false, do: async () => void ran.push('b') },
    { name: 'c', do: async () => Promise.reject(new Error('no')) },
    { name: 'd', do: async () => void ran.push('d') },
  ];
  await assert.rejects(runPlan(steps), (e: unknown) => e instanceof StepError && e.step === 'c');
  assert.deepEqual(ran, ['a']);
});
