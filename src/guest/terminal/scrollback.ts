// Bounded record of a shell's recent output, replayed when a client re-attaches.
// Stored as UTF-8 byte chunks; when trimmed, the cut is moved forward past any
// UTF-8 continuation bytes so the replay never starts in the middle of a character.

const COMPACT_AT = 1024;

export class Scrollback {
  private chunks: Buffer[] = [];
  private head = 0;
  private bytes = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity <= 0) throw new RangeError('scrollback capacity must be a positive integer');
  }

  get size(): number {
    return this.bytes;
  }

  append(data: string): void {
    if (data === '') return;
    let chunk: Buffer = Buffer.from(data, 'utf8');
    if (chunk.length >= this.capacity) {
      this.chunks = [];
      this.head = 0;
      this.bytes = 0;
      chunk = utf8Tail(chunk, this.capacity);
    }
    this.chunks.push(chunk);
    this.bytes += chunk.length;
    this.trim();
  }

  /** The retained output as a string (always valid UTF-8 boundaries). */
  snapshot(): string {
    if (this.bytes === 0) return '';
    return Buffer.concat(this.head === 0 ? this.chunks : this.chunks.slice(this.head), this.bytes).toString('utf8');
  }

  private trim(): void {
    while (this.bytes > this.capacity) {
      const first = this.chunks[this.head];
      if (first === undefined) break;
      const excess = this.bytes - this.capacity;
      if (first.length <= excess) {
        this.head += 1;
        this.bytes -= first.length;
        continue;
      }
      const rest = utf8Tail(first, first.length - excess);
      this.chunks[this.head] = rest;
      this.bytes -= first.length - rest.length;
    }
    if (this.head >= COMPACT_AT && this.head * 2 >= this.chunks.length) {
      this.chunks = this.chunks.slice(this.head);
      this.head = 0;
    }
  }
}

/** The last `max` bytes (or fewer) of `buf`, starting on a UTF-8 character boundary. */
export function utf8Tail(buf: Buffer, max: number): Buffer {
  if (buf.length <= max) return buf;
  let start = buf.length - max;
  // Skip continuation bytes (10xxxxxx): they belong to a character that started before the cut.
  while (start < buf.length && ((buf[start] ?? 0) & 0xc0) === 0x80) start += 1;
  return buf.subarray(start);
}
