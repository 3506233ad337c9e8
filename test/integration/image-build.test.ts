// The real image build (root, network for the first build; later runs reuse .cache/images).
// Files are inspected without mounting anything: cpio for the initramfs, debugfs for the ext4.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { GUEST_CONTRACT_PATH, guestContractEnv } from '../../src/guest/contract.ts';
import { buildImage, IMAGE_FILES, readImageManifest } from '../../src/image/index.ts';
import { inspectVmlinux } from '../../src/image/kernel.ts';
import { defaultRecipePath } from '../../src/image/recipe.ts';
import { ensureSharedImages, sharedImagesDir } from '../../src/image/shared.ts';

const skip = process.getuid?.() !== 0 ? 'needs root (mmdebstrap, mkfs.ext4 -d with ownership)' : false;

function debugfs(image: string, request: string): string {
  return execFileSync('debugfs', ['-R', request, image], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
}

test('the shared image set is complete and bootable-looking', { skip, timeout: 30 * 60_000 }, async (t) => {
  const images = await ensureSharedImages((m) => t.diagnostic(m));
  const { manifest } = images;
  assert.deepEqual(await readImageManifest(images.dir), manifest);

  // vmlinux: an x86-64 ELF that QEMU can boot through PVH.
  const vmlinux = await readFile(images.kernelPath);
  assert.deepEqual(inspectVmlinux(vmlinux), { pvh: true });
  assert.equal(manifest.kernel.pvh, true);
  assert.match(manifest.kernel.release, /-cloud-amd64$/);

  // initrd: gzip'd newc with busybox, /init and the module list.
  const listing = execFileSync('cpio', ['-it', '--quiet'], { input: gunzipSync(await readFile(images.initrdPath)), encoding: 'utf8' });
  for (const entry of ['init', 'bin/busybox', 'bin/switch_root', 'bin/findfs', 'etc/clarateach/modules', 'dev/console']) {
    assert.ok(listing.split('\n').includes(entry), entry);
  }
  for (const mod of ['virtio_mmio.ko', 'virtio_blk.ko', 'virtio_net.ko', 'failover.ko', 'net_failover.ko', 'overlay.ko']) {
    assert.ok(
      manifest.initrd.modules.some((m) => m.endsWith(`/${mod}`)),
      mod,
    );
    assert.match(listing, new RegExp(`/${mod.replace('.', '\\.')}\\n`));
  }

  // rootfs: labelled ext4 with our files, Node and the learner.
  assert.match(
    execFileSync('dumpe2fs', ['-h', images.rootfsPath], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }),
    /Filesystem volume name:\s+clarateach-base/,
  );
  assert.match(debugfs(images.rootfsPath, 'stat /usr/sbin/clarateach-init'), /Mode:\s+0755/);
  assert.equal(debugfs(images.rootfsPath, `cat ${GUEST_CONTRACT_PATH}`), guestContractEnv(), 'the guest contract');
  assert.match(debugfs(images.rootfsPath, 'stat /usr/local/bin/node'), /Mode:\s+0755/);
  assert.match(debugfs(images.rootfsPath, 'stat /opt/clarateach/bin/busybox'), /Mode:\s+0755/);
  assert.match(debugfs(images.rootfsPath, 'stat /home/learner'), /User:\s+1000\s+Group:\s+1000/);
  assert.match(debugfs(images.rootfsPath, 'cat /etc/passwd'), /^learner:x:1000:1000::\/home\/learner:\/bin\/bash$/m);
  assert.doesNotMatch(debugfs(images.rootfsPath, 'ls /etc/sudoers.d'), /learner/);
  assert.match(debugfs(images.rootfsPath, 'ls /var/lib/clarateach'), /base.*layer|layer.*base/s);
  assert.equal(manifest.rootfs.nodeVersion, process.version);
  if (manifest.rootfs.guestServices) {
    assert.match(debugfs(images.rootfsPath, 'stat /opt/clarateach/guest/main.mjs'), /Type: regular/);
    assert.match(debugfs(images.rootfsPath, 'ls /opt/clarateach/guest/node_modules/node-pty/build/Release'), /pty\.node/);
  }

  // Nothing half-written is left behind.
  assert.deepEqual(
    (await readdir(images.dir)).filter((n) => n.includes('.tmp-')),
    [],
  );
});

test('a rebuild with nothing changed reuses every stage within seconds', { skip, timeout: 30 * 60_000 }, async (t) => {
  const first = await ensureSharedImages((m) => t.diagnostic(m));
  const started = Date.now();
  const again = await buildImage({ imagesDir: sharedImagesDir() });
  const took = Date.now() - started;
  t.diagnostic(`warm rebuild took ${took} ms`);
  assert.ok(took < 20_000, `warm rebuild took ${took} ms`);
  assert.equal(again.inputHash, first.manifest.inputHash);
  assert.deepEqual(again.stages, first.manifest.stages);
  assert.deepEqual(again.files, first.manifest.files);
});

test('a changed recipe file rebuilds only the rootfs, reusing the cached Debian tarball', { skip, timeout: 30 * 60_000 }, async (t) => {
  const shared = await ensureSharedImages((m) => t.diagnostic(m));
  const dir = await mkdtemp(join(tmpdir(), 'ct-image-test-'));
  try {
    const recipe = JSON.parse(await readFile(defaultRecipePath(), 'utf8')) as Record<string, unknown>;
    await writeFile(join(dir, 'motd'), 'Welcome to the workshop!\n');
    recipe.files = [{ src: 'motd', dest: '/etc/motd', mode: '0644' }];
    const recipePath = join(dir, 'recipe.json');
    await writeFile(recipePath, JSON.stringify(recipe));
    const messages: string[] = [];
    const manifest = await buildImage({
      imagesDir: join(dir, 'images'),
      recipePath,
      cacheDir: join(shared.dir, '.cache'),
      onProgress: (m) => messages.push(m),
    });
    t.diagnostic(messages.join('\n'));
    assert.ok(
      messages.some((m) => m.startsWith('[debian] up to date')),
      'Debian tarball reused',
    );
    assert.equal(manifest.stages.debian.key, shared.manifest.stages.debian.key);
    assert.notEqual(manifest.stages.rootfs.key, shared.manifest.stages.rootfs.key);
    assert.equal(manifest.files.kernel.sha256, shared.manifest.files.kernel.sha256, 'same kernel, same bytes');
    assert.equal(manifest.files.initrd.sha256, shared.manifest.files.initrd.sha256, 'the initramfs is reproducible');
    assert.equal(debugfs(join(dir, 'images', IMAGE_FILES.rootfs), 'cat /etc/motd'), 'Welcome to the workshop!\n');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
