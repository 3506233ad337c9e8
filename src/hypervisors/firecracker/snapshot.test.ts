// Snapshot start's refusals, which need no jail: no jailer, a Firecracker without network_overrides.
// Save and restore through the jailer: test/integration/firecracker-snapshot.test.ts (root).
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { join } from 'node:path';
import type { GuestIdentity, SnapshotFiles } from '../../vms/ports.ts';
import { loggedPids } from '../../../test/support/firecracker/fake-firecracker-shim.ts';
import { createVmFixture, type VmFixture } from '../../../test/support/firecracker/fixtures.ts';
import { createFirecrackerDriver } from './index.ts';
import { NEEDS_JAILER, versionRefusal } from './snapshot.ts';
import type { TemplateTaps } from './template-tap.ts';

const identity: GuestIdentity = {
  ip: '10.0.0.2',
  prefixLength: 24,
  gateway: '10.0.0.1',
  mac: '06:00:0a:00:00:02',
  hostname: 'seat-1',
  dns: [],
  seedHex: 'ab'.repeat(64),
  epochMs: 1_700_000_000_000,
};

const noTaps: TemplateTaps = {
  create: () => Promise.reject(new Error('no TAP may be made')),
  remove: () => Promise.resolve(),
};

test('versions: network_overrides from 1.12.0 on', () => {
  assert.match(
    versionRefusal('Firecracker v1.8.0') ?? '',
    /^Firecracker v1\.8\.0 cannot give a restored seat its own TAP: network_overrides needs Firecracker 1\.12\.0 or later$/,
  );
  assert.match(versionRefusal('Firecracker v1.11.9') ?? '', /network_overrides/);
  assert.equal(versionRefusal('Firecracker v1.12.0'), undefined);
  assert.equal(versionRefusal('Firecracker v1.16.1'), undefined);
  assert.equal(versionRefusal('Firecracker v2.0.0-dev'), undefined);
  assert.match(versionRefusal('no version here') ?? '', /cannot tell the Firecracker version/);
});

describe('Firecracker snapshot start refuses', () => {
  let fx: VmFixture;
  let files: SnapshotFiles;

  beforeEach(async () => {
    fx = await createVmFixture('my-test.1');
    const dir = join(fx.dir, 'snap');
    files = { dir, memoryPath: join(dir, 'memory'), statePath: join(dir, 'state'), layerPath: join(dir, 'layer.img') };
  });

  afterEach(async () => {
    await fx.cleanup();
  });

  test('without the jailer: save and restore say so, and start nothing', async () => {
    const driver = await createFirecrackerDriver({
      firecrackerBin: fx.fakeFirecracker({ version: '1.12.0' }),
      cgroup: false,
      templateTaps: noTaps,
    });
    const snapshots = driver.snapshots;
    assert.ok(snapshots);
    await assert.rejects(snapshots.restore(fx.spec, files, identity), { message: NEEDS_JAILER });
    await assert.rejects(snapshots.save({ ...fx.spec, tapName: '' }, files, 10_000), { message: NEEDS_JAILER });
    assert.match(NEEDS_JAILER, /^firecracker snapshot start needs the jailer/);
    assert.equal(await snapshots.compatibility(), 'Firecracker v1.12.0; no jailer; devices 1');
    assert.deepEqual(loggedPids(fx.requestLog), [], 'no VMM was started');
  });

  test('a Firecracker before 1.12 (no network_overrides): restore and save refuse before starting anything', async () => {
    const driver = await createFirecrackerDriver({
      firecrackerBin: fx.fakeFirecracker(),
      jailerBin: join(fx.dir, 'never-run-jailer'),
      cgroup: false,
      templateTaps: noTaps,
    });
    const snapshots = driver.snapshots;
    assert.ok(snapshots);
    const refusal = /^Firecracker v1\.8\.0 cannot give a restored seat its own TAP: network_overrides needs Firecracker 1\.12\.0 or later$/;
    await assert.rejects(snapshots.restore(fx.spec, files, identity), { message: refusal });
    await assert.rejects(snapshots.save({ ...fx.spec, tapName: '' }, files, 10_000), { message: refusal });
    assert.equal(await snapshots.compatibility(), 'Firecracker v1.8.0; jailer; devices 1');
    assert.deepEqual(loggedPids(fx.requestLog), []);
  });
});
