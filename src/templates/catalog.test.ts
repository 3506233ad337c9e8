// Templates and builds on a real directory: a build handed out never changes under its VMs, a
// rebuild is a new build, unused old builds go, the default template is the guide's paths.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import {
  existsSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TemplateCatalog } from './catalog.ts';
import { VmError } from '../vms/errors.ts';
import { describeProcess } from '../host/process.ts';

/** A build's new file renamed into place, as `clarateach image build` writes each one. */
function replaceFile(dir: string, name: string, content: string, mtime?: string): void {
  writeFileSync(join(dir, `.${name}.tmp`), content);
  renameSync(join(dir, `.${name}.tmp`), join(dir, name));
  if (mtime !== undefined) utimesSync(join(dir, name), new Date(mtime), new Date(mtime));
}

/** The manifest a build writes last: what it built, with each boot file's size and mtime (ImageManifest). */
function writeManifest(dir: string, builtAt: string, inputHash: string): void {
  const info = (name: string): { name: string; bytes: number; sha256: string; mtimeMs: number } => {
    const st = statSync(join(dir, name));
    return { name, bytes: st.size, sha256: '', mtimeMs: st.mtimeMs };
  };
  const files = { kernel: info('vmlinux'), initrd: info('initrd.img'), rootfs: info('rootfs.ext4') };
  replaceFile(dir, 'manifest.json', JSON.stringify({ format: 1, builtAt, inputHash, files }));
}

/** What a whole `clarateach image build` does to a work directory: new files renamed into place, the manifest last. */
function writeBuild(dir: string, label: string, builtAt: string): void {
  mkdirSync(dir, { recursive: true });
  for (const name of ['vmlinux', 'initrd.img', 'rootfs.ext4']) replaceFile(dir, name, `${name} of ${label}`, builtAt);
  writeManifest(dir, builtAt, label);
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
    writeManifest(dir, '2030-01-01T00:00:00.000Z', 'one'); // a build run with nothing to do rewrites it
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
    replaceFile(dir, 'vmlinux', 'vmlinux of second');
    const during = await catalog.current('default');
    assert.equal(during.buildId, whole.buildId);
    assert.equal(readFileSync(during.paths.kernel, 'utf8'), 'vmlinux of first');
    writeBuild(dir, 'second', '2026-12-02T10:00:00.000Z');
    rmSync(join(dir, '.build.lock'));
    assert.notEqual((await catalog.current('default')).buildId, whole.buildId, 'after the build: the new files are the new build');
  });
});

/** The pid of a process that has exited: an image build (or agent) that was killed. */
function deadPid(): number {
  const child = spawnSync(process.execPath, ['-e', '']);
  assert.ok(child.pid !== undefined && child.pid > 0);
  return child.pid;
}

test('a build that failed or was killed halfway is never handed out: creates keep the last whole build', async () => {
  await withImages(async (dir) => {
    const warnings: string[] = [];
    const catalog = new TemplateCatalog(dir, (message) => warnings.push(message));
    writeBuild(dir, 'one', '2026-12-01T10:00:00.000Z');
    const whole = await catalog.current('default');
    assert.equal(readFileSync(whole.paths.kernel, 'utf8'), 'vmlinux of one', 'a whole build is published');
    assert.deepEqual(warnings, []);

    // The next build wrote its kernel, then its initrd failed: its lock is gone, the manifest is the old one.
    replaceFile(dir, 'vmlinux', 'vmlinux of two (new kernel)');
    for (const seat of [1, 2]) {
      const build = await catalog.current('default');
      assert.equal(build.buildId, whole.buildId, `seat ${seat} gets the last whole build`);
      assert.equal(readFileSync(build.paths.kernel, 'utf8'), 'vmlinux of one');
      assert.equal(readFileSync(build.paths.initrd, 'utf8'), 'initrd.img of one', 'kernel and initrd of one build');
    }
    assert.equal(warnings.length, 1, `told once, not on every create: ${warnings.join(' | ')}`);
    assert.match(warnings[0] ?? '', /vmlinux .*manifest\.json.*clarateach image build/);
    assert.match(warnings[0] ?? '', new RegExp(whole.buildId));
    // The build creates get is the current one: not pruned, listed as current.
    assert.deepEqual(await catalog.prune(() => new Set()), []);
    assert.ok(existsSync(whole.paths.rootfs));
    assert.equal((await catalog.list())[0]?.currentBuild, whole.buildId);

    // Killed instead: its lock names a process that is gone. Same answer.
    writeFileSync(join(dir, '.build.lock'), JSON.stringify({ pid: deadPid(), startTime: 1 }));
    assert.equal((await new TemplateCatalog(dir, () => undefined).current('default')).buildId, whole.buildId);
    rmSync(join(dir, '.build.lock'));

    // The build run again to its end: its files are the new current build.
    writeBuild(dir, 'two', '2026-12-02T10:00:00.000Z');
    const next = await catalog.current('default');
    assert.notEqual(next.buildId, whole.buildId);
    assert.equal(readFileSync(next.paths.kernel, 'utf8'), 'vmlinux of two');
    assert.equal(readFileSync(join(dir, 'vmlinux'), 'utf8'), 'vmlinux of two', "the guide's paths are the current build");
    assert.equal(warnings.length, 1);
  });
});

test('a failed first build is refused with the reason, not booted; files without a manifest are taken as they are', async () => {
  await withImages(async (dir) => {
    const catalog = new TemplateCatalog(dir, () => undefined);
    writeBuild(dir, 'one', '2026-12-01T10:00:00.000Z');
    replaceFile(dir, 'initrd.img', 'initrd.img of a build that failed later');
    await assert.rejects(catalog.current('default'), (e: unknown) => {
      assert.ok(e instanceof VmError);
      assert.equal(e.code, 'create_failed');
      assert.match(e.message, /initrd\.img .*manifest\.json.*: run clarateach image build$/);
      return true;
    });
    assert.ok(!existsSync(join(dir, 'builds', 'default')) || readdirSync(join(dir, 'builds', 'default')).length === 0, 'nothing published');

    // Files an operator put there by hand: no build wrote them, so there is nothing to hold them against.
    rmSync(join(dir, 'manifest.json'));
    assert.equal(readFileSync((await catalog.current('default')).paths.initrd, 'utf8'), 'initrd.img of a build that failed later');
  });
});

test('prune removes the half-made build folders a crashed publish left behind', async () => {
  await withImages(async (dir, catalog) => {
    writeBuild(dir, 'one', '2026-12-01T10:00:00.000Z');
    const one = await catalog.current('default');
    const rootfs = join(dir, 'rootfs.ext4');
    const linked = statSync(rootfs).nlink;
    // A publish that crashed after linking (by this naming, and by the one before it), and one
    // another process is making right now.
    const builds = join(dir, 'builds', 'default');
    const crashed = [`.new-${deadPid()}-0123456789ab`, '.new-0123456789ab'];
    for (const name of [...crashed, `.new-${process.pid}-ba9876543210`]) {
      mkdirSync(join(builds, name));
      linkSync(rootfs, join(builds, name, 'rootfs.ext4'));
    }
    assert.equal(statSync(rootfs).nlink, linked + 3);

    assert.deepEqual(await catalog.prune(() => new Set()), []);
    for (const name of crashed) assert.ok(!existsSync(join(builds, name)), `${name} removed`);
    assert.ok(existsSync(join(builds, `.new-${process.pid}-ba9876543210`)), 'a publish under way is left alone');
    assert.equal(statSync(rootfs).nlink, linked + 1, 'their links no longer hold the rootfs');
    assert.ok(existsSync(one.paths.rootfs));
  });
});
