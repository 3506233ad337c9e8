// Decoder for the LZ4 "legacy" frame format that the Linux kernel build uses for compressed kernel
// images (`lz4 -l`). The kernel appends the uncompressed size (4 bytes, little endian) after the
// last block; that trailer is returned separately when present.

const LEGACY_MAGIC = 0x184c2102;
/** Blocks of the legacy format decompress to at most 8 MiB each. */
const LEGACY_BLOCK_MAX = 8 * 1024 * 1024;

export class Lz4Error extends Error {
  constructor(message: string) {
    super(`lz4: ${message}`);
    this.name = 'Lz4Error';
  }
}

/** Decodes one raw LZ4 block into `out` at `outPos`; returns the new output position. */
export function decodeLz4Block(src: Uint8Array, start: number, end: number, out: Uint8Array, outPos: number): number {
  let ip = start;
  let op = outPos;
  while (ip < end) {
    const token = src[ip++] as number;
    let literals = token >>> 4;
    if (literals === 15) {
      let b: number;
      do {
        if (ip >= end) throw new Lz4Error('truncated literal length');
        b = src[ip++] as number;
        literals += b;
      } while (b === 255);
    }
    if (ip + literals > end) throw new Lz4Error('literals run past the block');
    if (op + literals > out.length) throw new Lz4Error('output overflow');
    out.set(src.subarray(ip, ip + literals), op);
    ip += literals;
    op += literals;
    if (ip >= end) break; // the last sequence carries literals only
    if (ip + 2 > end) throw new Lz4Error('truncated match offset');
    const offset = (src[ip] as number) | ((src[ip + 1] as number) << 8);
    ip += 2;
    if (offset === 0 || offset > op) throw new Lz4Error('invalid match offset');
    let matchLength = token & 15;
    if (matchLength === 15) {
      let b: number;
      do {
        if (ip >= end) throw new Lz4Error('truncated match length');
        b = src[ip++] as number;
        matchLength += b;
      } while (b === 255);
    }
    matchLength += 4;
    if (op + matchLength > out.length) throw new Lz4Error('output overflow');
    let from = op - offset;
    if (offset >= matchLength) {
      out.copyWithin(op, from, from + matchLength);
      op += matchLength;
    } else {
      // Overlapping copy: repeats the last `offset` bytes.
      for (let i = 0; i < matchLength; i++) out[op++] = out[from++] as number;
    }
  }
  return op;
}

export interface Lz4LegacyResult {
  readonly data: Buffer;
  /** The uncompressed size the kernel build appended, when the input ended with one. */
  readonly trailerSize?: number;
}

/** Decompresses a legacy-format LZ4 stream (possibly several concatenated). */
export function decompressLz4Legacy(input: Uint8Array): Lz4LegacyResult {
  const view = new DataView(input.buffer, input.byteOffset, input.byteLength);
  if (input.length < 4 || view.getUint32(0, true) !== LEGACY_MAGIC) throw new Lz4Error('not a legacy LZ4 stream');
  const blocks: Array<[number, number]> = [];
  let pos = 4;
  let trailerSize: number | undefined;
  while (pos + 4 <= input.length) {
    const size = view.getUint32(pos, true);
    if (size === LEGACY_MAGIC) {
      pos += 4;
      continue;
    }
    if (pos + 4 + size > input.length) {
      // Not a block: the kernel's appended uncompressed size (or trailing padding).
      if (pos + 4 === input.length) trailerSize = size;
      break;
    }
    blocks.push([pos + 4, pos + 4 + size]);
    pos += 4 + size;
  }
  if (blocks.length === 0) throw new Lz4Error('no blocks');
  const out = Buffer.allocUnsafe(blocks.length * LEGACY_BLOCK_MAX);
  let op = 0;
  for (const [start, end] of blocks) op = decodeLz4Block(input, start, end, out, op);
  const data = Buffer.from(out.subarray(0, op));
  return trailerSize === undefined ? { data } : { data, trailerSize };
}
