// The LZ4 legacy-frame decoder, against known frames and the lz4 tool.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { decodeLz4Block, decompressLz4Legacy, Lz4Error } from './lz4.ts';

function hasLz4(): boolean {
  try {
    execFileSync('lz4', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

test('a hand-made block: literals, then an overlapping match', () => {
  // token 0x34: 3 literals, match length 4+4=8; offset 3 repeats "abc".
  const block = Uint8Array.from([0x34, 0x61, 0x62, 0x63, 0x03, 0x00, 0x10, 0x21]);
  const out = new Uint8Array(64);
  const end = decodeLz4Block(block, 0, block.length, out, 0);
  assert.equal(Buffer.from(out.subarray(0, end)).toString(), 'abcabcabcab!');
});

test('a bad offset is an error, not a crash', () => {
  const block = Uint8Array.from([0x10, 0x61, 0x09, 0x00]);
  assert.throws(() => decodeLz4Block(block, 0, block.length, new Uint8Array(64), 0), Lz4Error);
});

test('the legacy format round-trips with the lz4 tool, with the kernel size trailer', { skip: hasLz4() ? false : 'needs lz4' }, () => {
  // Repetitive and random parts, larger than one 8 MiB legacy block.
  const parts: Buffer[] = [];
  for (let i = 0; i < 40; i++) parts.push(Buffer.alloc(200_000, i), randomBytes(20_000));
  const input = Buffer.concat(parts);
  const compressed = execFileSync('lz4', ['-l', '-9', '-c'], { input, maxBuffer: 64 * 1024 * 1024 });
  const trailer = Buffer.alloc(4);
  trailer.writeUInt32LE(input.length);
  const result = decompressLz4Legacy(Buffer.concat([compressed, trailer]));
  assert.equal(result.trailerSize, input.length);
  assert.ok(result.data.equals(input));
});

test('not an LZ4 legacy stream', () => {
  assert.throws(() => decompressLz4Legacy(Buffer.from('hello world')), /not a legacy LZ4 stream/);
});
