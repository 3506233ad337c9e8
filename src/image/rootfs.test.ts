// Rootfs planning without building: package list, mmdebstrap arguments, guest paths, ext4 sizing.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseRecipe } from './recipe.ts';
import { mmdebstrapArgs, packageList, planExt4, REQUIRED_PACKAGES, resolveInRoot } from './rootfs.ts';

const recipe = parseRecipe(
  '/x/recipe.json',
  JSON.stringify({
    sources: ['deb http://deb.debian.org/debian bookworm main', 'deb http://deb.debian.org/debian-security bookworm-security main'],
    packages: ['git', 'bash'],
    excludePaths: ['/usr/share/doc/*'],
    keepPaths: ['/usr/share/doc/*/copyright'],
    learner: { sudo: true },
  }),
);

test('package list: required ones, the recipe ones, sudo when asked; sorted and unique', () => {
  const list = packageList(recipe);
  for (const p of [...REQUIRED_PACKAGES, 'git', 'sudo']) assert.ok(list.includes(p), p);
  assert.deepEqual(list, [...new Set(list)].sort());
});

test('mmdebstrap arguments', () => {
  const args = mmdebstrapArgs(recipe, '/cache/out.tar');
  assert.ok(args.includes('--variant=minbase'));
  assert.ok(args.includes('--format=tar'));
  assert.ok(args.includes('--dpkgopt=path-exclude=/usr/share/doc/*'));
  assert.ok(args.includes('--dpkgopt=path-include=/usr/share/doc/*/copyright'));
  assert.ok(args.some((a) => a.startsWith('--customize-hook=chroot "$1" useradd --uid 1000 ') && a.endsWith(' learner')));
  assert.ok(args.some((a) => a.includes('NOPASSWD') && a.includes('/etc/sudoers.d/learner')));
  assert.deepEqual(args.slice(-4), ['bookworm', '/cache/out.tar', ...recipe.sources]);
});

test('guest paths resolve through the guest tree symlinks and never leave it', async () => {
  const root = await mkdtemp(join(tmpdir(), 'ct-root-'));
  try {
    await mkdir(join(root, 'usr/sbin'), { recursive: true });
    await symlink('usr/sbin', join(root, 'sbin'));
    await symlink('/usr', join(root, 'abs'));
    await symlink('../../..', join(root, 'usr/sbin/up'));
    assert.equal(await resolveInRoot(root, '/sbin/clarateach-init'), join(root, 'usr/sbin/clarateach-init'));
    assert.equal(await resolveInRoot(root, '/abs/sbin/x'), join(root, 'usr/sbin/x'));
    assert.equal(await resolveInRoot(root, '/sbin/up/etc/passwd'), join(root, 'etc/passwd'));
    assert.equal(await resolveInRoot(root, '/../../etc/passwd'), join(root, 'etc/passwd'));
    // The last component is not followed: writing replaces the link itself.
    assert.equal(await resolveInRoot(root, '/sbin'), join(root, 'sbin'));
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('ext4 sizing leaves room for content, inodes and the margin', () => {
  const plan = planExt4({ bytes: 600 * 1024 * 1024, inodes: 16_000 }, 256);
  assert.ok(plan.sizeBytes > (600 + 256) * 1024 * 1024);
  assert.ok(plan.sizeBytes < 1200 * 1024 * 1024);
  assert.equal(plan.sizeBytes % (1024 * 1024), 0);
  assert.ok(plan.inodes >= 16_000);
});
