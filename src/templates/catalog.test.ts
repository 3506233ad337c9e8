// Templates and builds on a real directory: a build handed out never changes under its VMs, a
// rebuild is a new build, unused old builds go, the default template is the guide's paths.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TemplateCatalog } from './catalog.ts';
import { VmError } from '../vms/errors.ts';
import { describeProcess } from '../host/process.ts';

/** What `clarateach image build` does to a work directory: new files renamed into place. */
function writeBuild(dir: string, label: string, builtAt: string): void {
  mkdirSync(dir, { recursive: true });
  for (const name of ['vmlinux', 'initrd.img', 'rootfs.ext4']) {
    writeFileSync(join(dir, `.${name}.tmp`), `${name} of ${label}`);
    renameSync(join(dir, `.${name}.tmp`), join(dir, name));
    utimesSync(join(dir, name), new Date(builtAt), new Date(builtAt));
  }
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ builtAt, inputHash: label }));
}

function withImages(fn: (dir: string, catalog: TemplateCatalog) => Promise<void>): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'ct-templates-'));
  return fn(dir, new TemplateCatalog(dir)).finally(() => rmSync(dir, { recursive: true, force: true }));
}

test('a build keeps its files when the template is rebuilt; the rebuild is a new build', async () => {
  await withImages(async (dir, catalog) => {
    writeBuild(dir, 'one', '2026-12-01T10:00:00.000Z');
    const first = await catalog.current('default');
    assert.match(first.buildId, /^20261201T100000-[0-9a-f]{8}$/);
    assert.deepEqual(await catalog.current('default'), first, 'the same files are the same build');
    assert.deepEqual(await new TemplateCatalog(dir).current('default'), first, 'in another process too');
    writeFileSync(join(dir, 'manifest.json'), '{"builtAt":"2030-01-01T00:00:00.000Z"}'); // a no-op build run rewrites it
    assert.equal((await new TemplateCatalog(dir).current('default')).buildId, first.buildId);
    assert.equal(readFileSync(first.paths.rootfs, 'utf8'), 'rootfs.ext4 of one');
    assert.equal(statSync(first.paths.rootfs).ino, statSync(join(dir, 'rootfs.ext4')).ino, 'a hard link, not a copy');

    writeBuild(dir, 'two', '2026-12-02T10:00:00.000Z');
    const second = await catalog.current('default');
    assert.notEqual(second.buildId, first.buildId);
    assert.equal(readFileSync(second.paths.rootfs, 'utf8'), 'rootfs.ext4 of two');
    // The guide's paths are the default template's current build; the first build is untouched.
    assert.equal(readFileSync(join(dir, 'rootfs.ext4'), 'utf8'), 'rootfs.ext4 of two');
    assert.equal(readFileSync(catalog.paths('default', first.buildId).rootfs, 'utf8'), 'rootfs.ext4 of one');
    assert.equal(readFileSync(catalog.paths('default', first.buildId).kernel, 'utf8'), 'vmlinux of one');
  });
});

test('prune removes only builds that are neither current nor used by a VM', async () => {
  await withImages(async (dir, catalog) => {
    writeBuild(dir, 'one', '2026-12-01T10:00:00.000Z');
    const one = await catalog.current('default');
    writeBuild(dir, 'two', '2026-12-02T10:00:00.000Z');
    const two = await catalog.current('default');
    writeBuild(dir, 'three', '2026-12-03T10:00:00.000Z');
    const three = await catalog.current('default');

    assert.deepEqual(await catalog.prune(() => new Set([`default/${one.buildId}`])), [`default/${two.buildId}`]);
    assert.ok(existsSync(one.paths.rootfs), 'a VM still uses it');
    assert.ok(!existsSync(two.paths.rootfs));
    assert.ok(existsSync(three.paths.rootfs), 'the current build stays');
    assert.deepEqual(await catalog.prune(() => new Set()), [`default/${one.buildId}`]);
    assert.deepEqual(await catalog.prune(() => new Set()), []);
    assert.ok(existsSync(three.paths.rootfs) && existsSync(join(dir, 'rootfs.ext4')));
  });
});

test('named templates live beside the default one and are listed with their builds', async () => {
  await withImages(async (dir, catalog) => {
    writeBuild(dir, 'base', '2026-12-01T10:00:00.000Z');
    writeBuild(catalog.workDir('python'), 'py', '2026-12-02T08:30:00.000Z');
    assert.equal(catalog.workDir('python'), join(dir, 'templates', 'python'));
    const py = await catalog.current('python');
    assert.equal(readFileSync(py.paths.rootfs, 'utf8'), 'rootfs.ext4 of py');
    const base = await catalog.current('default');
    const listed = await catalog.list();
    assert.deepEqual(
      listed.map((t) => [t.name, t.currentBuild, t.builds.map((b) => [b.id, b.current, b.builtAt])]),
      [
        ['default', base.buildId, [[base.buildId, true, '2026-12-01T10:00:00Z']]],
        ['python', py.buildId, [[py.buildId, true, '2026-12-02T08:30:00Z']]],
      ],
    );
  });
});

test('a template without a build, or with a bad name, is refused with a clear error', async () => {
  await withImages(async (_dir, catalog) => {
    await assert.rejects(catalog.current('default'), (e: unknown) => {
      // The default template always exists: its missing files are the agent's failure, named.
      assert.ok(e instanceof VmError);
      assert.equal(e.code, 'create_failed');
      assert.match(e.message, /vmlinux, .*initrd\.img, .*rootfs\.ext4 are missing: run clarateach image build$/);
      return true;
    });
    await assert.rejects(
      catalog.current('ruby'),
      (e: unknown) => e instanceof VmError && e.code === 'template_not_found' && /clarateach image build --template ruby$/.test(e.message),
    );
    await assert.rejects(catalog.current('../etc'), (e: unknown) => e instanceof VmError && e.code === 'invalid_field');
  });
});

test('VMs recorded before templates (build "") use the template files as they are', async () => {
  await withImages(async (dir, catalog) => {
    assert.equal(catalog.paths('default', '').rootfs, join(dir, 'rootfs.ext4'));
  });
});

test('while the template is being rebuilt, a create gets its last whole build, never the half-new files', async () => {
  await withImages(async (dir, catalog) => {
    const lock = JSON.stringify({ pid: process.pid, startTime: describeProcess(process.pid)?.startTime ?? 0 });
    writeFileSync(join(dir, '.build.lock'), lock);
    writeBuild(dir, 'first', '2026-12-01T10:00:00.000Z');
    await assert.rejects(catalog.current('default'), (e: unknown) => e instanceof VmError && e.code === 'template_building');
    rmSync(join(dir, '.build.lock'));
    const whole = await catalog.current('default');

    writeFileSync(join(dir, '.build.lock'), lock);
    // The build has replaced the kernel, not yet the rootfs.
    writeFileSync(join(dir, '.vmlinux.tmp'), 'vmlinux of second');
    renameSync(join(dir, '.vmlinux.tmp'), join(dir, 'vmlinux'));
    const during = await catalog.current('default');
    assert.equal(during.buildId, whole.buildId);
    assert.equal(readFileSync(during.paths.kernel, 'utf8'), 'vmlinux of first');
    rmSync(join(dir, '.build.lock'));
    assert.notEqual((await catalog.current('default')).buildId, whole.buildId, 'after the build: the new files are the new build');
  });
});
