// The guest kernel: ELF checks, bzImage payload extraction, resolving the cloud kernel package.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { gzipSync } from 'node:zlib';
import { bzImagePayload, decompressPayload, inspectVmlinux, resolveKernelPackage } from './kernel.ts';

/** A minimal x86-64 ELF executable with one PT_NOTE segment holding the given notes. */
function fakeElf(notes: Array<{ name: string; type: number; desc: Buffer }>): Buffer {
  const noteBufs = notes.map(({ name, type, desc }) => {
    const nameBytes = Buffer.from(`${name}\0`);
    const head = Buffer.alloc(12);
    head.writeUInt32LE(nameBytes.length, 0);
    head.writeUInt32LE(desc.length, 4);
    head.writeUInt32LE(type, 8);
    const pad = (b: Buffer): Buffer => Buffer.concat([b, Buffer.alloc((4 - (b.length % 4)) % 4)]);
    return Buffer.concat([head, pad(nameBytes), pad(desc)]);
  });
  const noteData = Buffer.concat(noteBufs);
  const elf = Buffer.alloc(64 + 56);
  elf.writeUInt32BE(0x7f454c46, 0);
  elf[4] = 2; // 64-bit
  elf[5] = 1; // little endian
  elf.writeUInt16LE(2, 16); // ET_EXEC
  elf.writeUInt16LE(62, 18); // x86-64
  elf.writeBigUInt64LE(64n, 32); // e_phoff
  elf.writeUInt16LE(56, 54); // e_phentsize
  elf.writeUInt16LE(1, 56); // e_phnum
  elf.writeUInt32LE(4, 64); // PT_NOTE
  elf.writeBigUInt64LE(BigInt(64 + 56), 64 + 8); // p_offset
  elf.writeBigUInt64LE(BigInt(noteData.length), 64 + 32); // p_filesz
  return Buffer.concat([elf, noteData]);
}

/** A bzImage-shaped file: boot header (protocol 2.15) and the payload after 2 setup sectors. */
function fakeBzImage(payload: Buffer): Buffer {
  const setupSects = 1;
  const image = Buffer.alloc((setupSects + 1) * 512 + 100 + payload.length);
  image[0x1f1] = setupSects;
  image.writeUInt32LE(0x53726448, 0x202);
  image.writeUInt16LE(0x020f, 0x206);
  image.writeUInt32LE(100, 0x248);
  image.writeUInt32LE(payload.length, 0x24c);
  payload.copy(image, (setupSects + 1) * 512 + 100);
  return image;
}

test('ELF checks: the PVH note is found; other files are refused', () => {
  assert.deepEqual(inspectVmlinux(fakeElf([{ name: 'Xen', type: 18, desc: Buffer.alloc(4) }])), { pvh: true });
  assert.deepEqual(inspectVmlinux(fakeElf([{ name: 'GNU', type: 3, desc: Buffer.alloc(20) }])), { pvh: false });
  assert.throws(() => inspectVmlinux(Buffer.alloc(100)), /not an ELF/);
  const arm = fakeElf([]);
  arm.writeUInt16LE(183, 18);
  assert.throws(() => inspectVmlinux(arm), /not an x86-64 ELF/);
});

test('the payload is found through the boot header and decompressed (gzip)', async () => {
  const elf = fakeElf([{ name: 'Xen', type: 18, desc: Buffer.alloc(4) }]);
  const payload = bzImagePayload(fakeBzImage(gzipSync(elf)));
  assert.equal(payload.compression, 'gzip');
  assert.ok((await decompressPayload(payload)).equals(elf));
});

test('a size trailer that does not match is an error (xz)', async () => {
  const elf = fakeElf([]);
  const xz = execFileSync('xz', ['-c', '--check=crc32'], { input: elf });
  const good = Buffer.alloc(4);
  good.writeUInt32LE(elf.length);
  assert.ok((await decompressPayload(bzImagePayload(fakeBzImage(Buffer.concat([xz, good]))))).equals(elf));
  const bad = Buffer.alloc(4);
  bad.writeUInt32LE(elf.length + 1);
  await assert.rejects(decompressPayload(bzImagePayload(fakeBzImage(Buffer.concat([xz, bad])))), /the image says/);
});

test('not a bzImage', () => {
  assert.throws(() => bzImagePayload(Buffer.alloc(4096)), /not a bzImage/);
});

test('the cloud kernel meta package resolves to a versioned image package', { skip: process.platform !== 'linux' }, async (t) => {
  try {
    execFileSync('apt-cache', ['--version'], { stdio: 'ignore' });
  } catch {
    t.skip('needs apt-cache');
    return;
  }
  const pkg = await resolveKernelPackage('linux-image-cloud-amd64');
  assert.match(pkg.name, /^linux-image-\d+\.\d+\.\d+-\d+-cloud-amd64$/);
  assert.match(pkg.version, /^\d+\.\d+/);
});
