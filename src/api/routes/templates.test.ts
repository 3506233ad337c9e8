// Templates through the API: a VM records the build it was made from and keeps it across a
// rebuild of its template; GET /templates shows the builds and who uses them; old builds go.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildTestApi } from '../../../test/support/api.ts';

/** A rebuild as `clarateach image build` makes it: new files renamed over the old names. */
function rebuild(imagesDir: string, label: string): void {
  for (const name of ['vmlinux', 'initrd.img', 'rootfs.ext4']) {
    writeFileSync(join(imagesDir, `.${name}.new`), `${name} ${label}`);
    renameSync(join(imagesDir, `.${name}.new`), join(imagesDir, name));
  }
}

test('a VM is booted from the build it was made from, also after its template is rebuilt', async () => {
  const api = await buildTestApi({ agentToken: undefined, capacity: 4 });
  const { app, manager } = api;
  const imagesDir = join(api.dir, 'images');
  try {
    const first = (await app.inject({ method: 'POST', url: '/vms', payload: { workshop_id: 'ws', seat_id: 1 } })).json();
    assert.equal(first.template, 'default');
    assert.match(first.build_id, /^\d{8}T\d{6}-[0-9a-f]{8}$/);

    rebuild(imagesDir, 'v2');
    const second = (
      await app.inject({ method: 'POST', url: '/vms', payload: { workshop_id: 'ws', seat_id: 2, template: 'default' } })
    ).json();
    assert.notEqual(second.build_id, first.build_id);

    // What a restart of seat 1 would boot: its own build's files, not the rebuilt ones.
    const spec1 = manager.launchSpec(manager.get('ws', 1));
    const spec2 = manager.launchSpec(manager.get('ws', 2));
    assert.equal(readFileSync(spec1.baseDiskPath, 'utf8'), 'x');
    assert.equal(readFileSync(spec2.baseDiskPath, 'utf8'), 'rootfs.ext4 v2');
    assert.equal(readFileSync(join(imagesDir, 'rootfs.ext4'), 'utf8'), 'rootfs.ext4 v2', "the guide's path is the current build");

    const listed = (await app.inject({ url: '/templates' })).json();
    assert.deepEqual(
      listed.templates[0].builds.map((b: { id: string; current: boolean; vms: number }) => [b.id, b.current, b.vms]),
      [
        [first.build_id, false, 1],
        [second.build_id, true, 1],
      ],
    );

    // The old build goes once no VM uses it; the current one stays even without VMs.
    assert.equal((await app.inject({ method: 'DELETE', url: '/vms/ws/1' })).statusCode, 204);
    await manager.pruneBuilds();
    assert.ok(!existsSync(spec1.baseDiskPath));
    assert.equal((await app.inject({ method: 'DELETE', url: '/vms/ws/2' })).statusCode, 204);
    await manager.pruneBuilds();
    assert.ok(existsSync(spec2.baseDiskPath));
  } finally {
    await api.close();
  }
});

test('a create naming a template that has no build, or a malformed one, is refused and leaves nothing', async () => {
  const api = await buildTestApi({ agentToken: undefined, capacity: 4 });
  try {
    const missing = await api.app.inject({ method: 'POST', url: '/vms', payload: { workshop_id: 'ws', seat_id: 1, template: 'ruby' } });
    assert.equal(missing.statusCode, 404);
    assert.equal(missing.json().code, 'template_not_found');
    assert.match(missing.json().error, /clarateach image build --template ruby/);
    const bad = await api.app.inject({ method: 'POST', url: '/vms', payload: { workshop_id: 'ws', seat_id: 1, template: '../x' } });
    assert.equal(bad.statusCode, 400);
    assert.equal((await api.app.inject({ url: '/vms' })).json().vms.length, 0);
  } finally {
    await api.close();
  }
});
