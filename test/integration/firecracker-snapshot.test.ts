// Firecracker snapshot start through the stand-in jailer and Firecracker (every request checked
// against the OpenAPI document, every path resolved inside the jail, the VMM run as the VM's uid):
// a template saved, a seat restored on its own TAP and layer and handed its identity over vsock,
// and failures that leave nothing behind. Needs root (chown, mknod, setpriv).
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { processStartTime } from '../../src/host/process.ts';
import { createFirecrackerDriver, type TemplateTaps } from '../../src/hypervisors/firecracker/index.ts';
import { identityLine } from '../../src/vms/identity.ts';
import type { GuestIdentity, SnapshotDriver, SnapshotFiles, VmLaunchSpec } from '../../src/vms/ports.ts';
import { loggedPids, loggedRequests, readJsonLines } from '../support/firecracker/fake-firecracker-shim.ts';
import { createVmFixture, type VmFixture } from '../support/firecracker/fixtures.ts';
import { capturingLogger } from '../support/logs.ts';

const skip = process.getuid?.() === 0 ? false : 'needs root (the stand-in jailer chowns, mknods and drops to the VM uid)';
const UID_BASE = 2_000_000_000 + (process.pid % 1000) * 65_536;
const MIB = 1024 * 1024;

const identity: GuestIdentity = {
  ip: '10.0.0.2',
  prefixLength: 24,
  gateway: '10.0.0.1',
  mac: '06:00:0a:00:00:02',
  hostname: 'seat-1',
  dns: ['1.1.1.1'],
  seedHex: 'cd'.repeat(64),
  epochMs: 1_700_000_000_000,
};

describe('Firecracker snapshot start through the jailer', { skip }, () => {
  let fx: VmFixture;
  let chrootBase: string;
  let files: SnapshotFiles;
  let template: VmLaunchSpec;
  const taps: string[] = [];
  const logs: string[] = [];
  const recordingTaps: TemplateTaps = {
    create: async (name, owner) => void taps.push(`create ${name} ${owner.uid}:${owner.gid}`),
    remove: async (name) => void taps.push(`remove ${name}`),
  };

  beforeEach(async () => {
    fx = await createVmFixture('my-test.1', { jailed: true });
    chrootBase = join(fx.dir, 'jail');
    mkdirSync(chrootBase);
    const dir = join(fx.dir, 'snap');
    mkdirSync(join(dir, 'run'), { recursive: true });
    files = { dir, memoryPath: join(dir, 'memory'), statePath: join(dir, 'state'), layerPath: join(dir, 'layer.img') };
    writeFileSync(files.layerPath, Buffer.alloc(4096));
    // As the snapshot store makes it (src/snapshots/store.ts).
    template = {
      ...fx.spec,
      id: 'snapshot.0badcafe',
      kernelArgs: 'clarateach.identity=wait',
      layerDiskPath: files.layerPath,
      tapName: '',
      mac: '52:54:00:00:00:01',
      runDir: join(dir, 'run'),
      consoleLogPath: join(dir, 'console.log'),
    };
    taps.length = 0;
    logs.length = 0;
  });

  afterEach(async () => {
    await fx.cleanup();
  });

  async function snapshotsOf(options: Parameters<VmFixture['fakeFirecracker']>[0] = {}): Promise<SnapshotDriver> {
    const driver = await createFirecrackerDriver({
      firecrackerBin: fx.fakeFirecracker({ version: '1.12.0', ...options }),
      jailerBin: fx.fakeJailer(),
      jail: { chrootBaseDir: chrootBase, uidBase: UID_BASE },
      cgroup: false,
      apiSocketTimeoutMs: 30_000,
      templateTaps: recordingTaps,
      log: capturingLogger(logs),
    });
    assert.ok(driver.snapshots);
    return driver.snapshots;
  }

  const noneAlive = (): void => {
    for (const pid of loggedPids(fx.requestLog)) assert.equal(processStartTime(pid), undefined, `pid ${pid} is gone`);
  };
  const jails = (): string[] => readdirSync(chrootBase).filter((e) => !e.startsWith('.'));
  const jailDirs = (): string[] => jails().flatMap((exec) => readdirSync(join(chrootBase, exec)));

  test('save: template booted with a vsock device and a TAP of its own, paused when ready, saved, nothing left; restore: the seat on its own TAP and layer gets its identity', async () => {
    const snapshots = await snapshotsOf();
    await snapshots.save(template, files, 60_000);

    const tap = taps[0]?.split(' ')[1] ?? '';
    assert.match(tap, /^ctsnap[0-9a-f]{8}$/);
    assert.deepEqual(taps, [`create ${tap} ${UID_BASE + 1}:${UID_BASE + 1}`, `remove ${tap}`], 'the TAP of the template uid, removed');
    assert.deepEqual(
      loggedRequests(fx.requestLog).map((r) => `${r.status} ${r.method} ${r.path} ${JSON.stringify(r.body ?? null)}`),
      [
        '204 PUT /machine-config {"vcpu_count":2,"mem_size_mib":512}',
        '204 PUT /boot-source {"kernel_image_path":"/vmlinux","initrd_path":"/initrd.img","boot_args":"console=ttyS0 reboot=k panic=1 pci=off clarateach.halt=reboot clarateach.identity=wait"}',
        '204 PUT /drives/base {"drive_id":"base","path_on_host":"/rootfs.ext4","is_root_device":false,"is_read_only":true}',
        '204 PUT /drives/layer {"drive_id":"layer","path_on_host":"/layer.ext4","is_root_device":false,"is_read_only":false}',
        `204 PUT /network-interfaces/eth0 {"iface_id":"eth0","host_dev_name":"${tap}","guest_mac":"52:54:00:00:00:01"}`,
        '204 PUT /vsock {"guest_cid":3,"uds_path":"/v.sock"}',
        '204 PUT /actions {"action_type":"InstanceStart"}',
        '204 PATCH /vm {"state":"Paused"}',
        '204 PUT /snapshot/create {"snapshot_type":"Full","snapshot_path":"/snapshot.state","mem_file_path":"/snapshot.mem"}',
      ],
    );
    const guest = readJsonLines(fx.requestLog).filter((e) => e.event === 'guest');
    assert.deepEqual(
      guest.map((e) => e.step),
      ['connected'],
      'the template said ready once and got no identity',
    );
    for (const path of [files.statePath, files.memoryPath, files.layerPath]) {
      const st = statSync(path);
      assert.equal(st.uid, 0, `${path} given back to root`);
    }
    assert.equal(statSync(files.memoryPath).mode & 0o777, 0o644, 'readable by every seat VMM');
    assert.equal(statSync(files.memoryPath).size, 512 * MIB);
    noneAlive();
    assert.deepEqual(jailDirs(), [], 'the template jail is gone');
    assert.deepEqual(readJsonLines(fx.violationsLog), []);

    // The seat: its own copy of the layer (DiskPort.copyLayer), its own TAP.
    copyFileSync(files.layerPath, fx.spec.layerDiskPath);
    const before = loggedRequests(fx.requestLog).length;
    const driver = await createFirecrackerDriver({
      firecrackerBin: fx.fakeFirecracker({ version: '1.12.0' }),
      jailerBin: fx.fakeJailer(),
      jail: { chrootBaseDir: chrootBase, uidBase: UID_BASE },
      cgroup: false,
      apiSocketTimeoutMs: 30_000,
      templateTaps: recordingTaps,
    });
    const proc = await (driver.snapshots as SnapshotDriver).restore(fx.spec, files, identity);
    assert.equal(driver.isAlive(proc), true);
    assert.deepEqual(
      loggedRequests(fx.requestLog)
        .slice(before)
        .map((r) => `${r.status} ${r.method} ${r.path} ${JSON.stringify(r.body ?? null)}`),
      [
        '204 PUT /snapshot/load {"snapshot_path":"/snapshot.state","mem_backend":{"backend_type":"File","backend_path":"/snapshot.mem"},"network_overrides":[{"iface_id":"eth0","host_dev_name":"ct-tap1"}],"resume_vm":true}',
      ],
    );
    const loaded = readJsonLines(fx.requestLog).filter((e) => e.event === 'snapshot-loaded');
    assert.deepEqual(loaded.at(-1)?.nets, [{ iface_id: 'eth0', host_dev_name: 'ct-tap1', guest_mac: '52:54:00:00:00:01' }]);
    const lines = readJsonLines(fx.requestLog).filter((e) => e.event === 'guest' && e.step === 'identity');
    assert.deepEqual(
      lines.map((e) => e.line),
      [identityLine(identity)],
      'the restored guest reconnected and got its line',
    );
    // The seat's VMM saw its own layer at the template's path: a hard link to the seat's file.
    const [exec] = jails();
    const seatJail = join(chrootBase, exec ?? '', jailDirs()[0] ?? '', 'root');
    assert.equal(statSync(join(seatJail, 'layer.ext4')).ino, statSync(fx.spec.layerDiskPath).ino);
    assert.equal(statSync(join(seatJail, 'snapshot.mem')).ino, statSync(files.memoryPath).ino, 'memory shared, not copied');
    assert.equal(existsSync(join(seatJail, 'v.sock_52')), false, 'the identity listener is closed');
    await driver.stop(fx.spec, proc, 0);
    noneAlive();
    assert.deepEqual(jailDirs(), []);
    assert.deepEqual(readJsonLines(fx.violationsLog), []);
  });

  test('a failed load: rejects with Firecracker reason, leaves no process and no jail', async () => {
    writeFileSync(files.statePath, 'not a snapshot\n');
    writeFileSync(files.memoryPath, Buffer.alloc(4096));
    copyFileSync(files.layerPath, fx.spec.layerDiskPath);
    const snapshots = await snapshotsOf();
    await assert.rejects(snapshots.restore(fx.spec, files, identity), /PUT \/snapshot\/load failed \(400\): Load snapshot error/);
    noneAlive();
    assert.deepEqual(jailDirs(), []);
    assert.deepEqual(readJsonLines(fx.violationsLog), []);
  });

  test('a guest that refuses its identity: rejects with its answer, leaves nothing', async () => {
    const saver = await snapshotsOf();
    await saver.save(template, files, 60_000);
    copyFileSync(files.layerPath, fx.spec.layerDiskPath);
    const snapshots = await snapshotsOf({ guestIdentity: 'refuse' });
    await assert.rejects(snapshots.restore(fx.spec, files, identity), /the restored guest refused its identity: identity-error/);
    noneAlive();
    assert.deepEqual(jailDirs(), []);
  });
});
