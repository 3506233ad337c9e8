// The start-up sweep: what no recorded VM owns is removed and counted by kind; what a VM owns stays.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { imagePaths } from '../image/layout.ts';
import { findProcessesUnder, isProcessAlive, killProcess } from '../host/process.ts';
import { VmStore } from '../store/vm-store.ts';
import { MemoryNetwork, spawnStandIn, StandInDriver, testPorts } from '../../test/support/stand-ins.ts';
import { VmManager } from './manager.ts';
import type { ReclaimCounts } from './ports.ts';

class ReclaimingDriver extends StandInDriver {
  kept: string[] = [];
  async reclaim(keep: ReadonlySet<string>): Promise<ReclaimCounts> {
    this.kept = [...keep];
    return { cgroups: 2 };
  }
}

test('reconcile removes orphaned processes, TAPs and directories, counts them by kind with the driver’s own, and keeps what VMs own', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ct-reclaim-'));
  const stateDir = join(dir, 'state');
  const imagesDir = join(dir, 'images');
  mkdirSync(imagesDir);
  const images = imagePaths(imagesDir);
  for (const f of [images.kernel, images.initrd, images.rootfs]) writeFileSync(f, 'x');
  const store = new VmStore(join(stateDir, 'agent.db'));
  const network = new MemoryNetwork();
  const driver = new ReclaimingDriver();
  const lines: { msg: string; reclaimed?: ReclaimCounts }[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as { msg: string }) });
  const manager = new VmManager({
    ports: testPorts({ store, driver, network, imagesDir }),
    log,
    stateDir,
    capacity: 4,
    vmDiskMb: 64,
    gracefulStopMs: 100,
  });
  try {
    const vm = await manager.create({ workshopId: 'ws', seatId: 1, vcpus: 1, memoryMb: 256, template: 'default' });
    network.taps.add('ct0a0b0c0d');
    network.taps.add('ct0a0b0c0f');
    const strayDir = join(manager.vmsDir, 'ct0a0b0c0e');
    mkdirSync(strayDir, { recursive: true });
    const stray = spawnStandIn(strayDir);

    const counts = await manager.reconcile();

    assert.deepEqual(counts, { processes: 1, cgroups: 2, taps: 2, directories: 1 });
    assert.deepEqual(driver.kept, ['ws.1']);
    assert.equal(isProcessAlive(stray), false);
    assert.equal(existsSync(strayDir), false);
    assert.deepEqual([...network.taps], [vm.tapName]);
    assert.ok(isProcessAlive({ pid: vm.pid ?? -1, startTime: vm.pidStartTime ?? -1 }), 'the owned VMM is untouched');
    const summary = lines.filter((l) => l.reclaimed !== undefined);
    assert.equal(summary.length, 1, 'one start-up line says what was reclaimed');
    assert.deepEqual(summary[0]?.reclaimed, counts);
    assert.deepEqual(await manager.reconcile(), { processes: 0, cgroups: 2, taps: 0, directories: 0 });
  } finally {
    for (const { proc } of await findProcessesUnder(dir)) await killProcess(proc);
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
