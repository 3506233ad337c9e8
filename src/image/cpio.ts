// A writer for the "newc" cpio format the kernel unpacks as an initramfs. Entries carry fixed
// ownership (root) and mtime 0, so the same inputs always give the same archive.

export type CpioEntry =
  | { readonly type: 'dir'; readonly path: string; readonly mode?: number }
  | { readonly type: 'file'; readonly path: string; readonly data: Uint8Array; readonly mode?: number }
  | { readonly type: 'symlink'; readonly path: string; readonly target: string }
  | { readonly type: 'chardev'; readonly path: string; readonly major: number; readonly minor: number; readonly mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

function pad4(length: number): Buffer {
  return Buffer.alloc((4 - (length % 4)) % 4);
}

function header(fields: {
  ino: number;
  mode: number;
  nlink: number;
  size: number;
  rdevMajor: number;
  rdevMinor: number;
  nameSize: number;
}): Buffer {
  const values = [
    fields.ino,
    fields.mode,
    0 /* uid */,
    0 /* gid */,
    fields.nlink,
    0 /* mtime */,
    fields.size,
    0 /* devmajor */,
    0 /* devminor */,
    fields.rdevMajor,
    fields.rdevMinor,
    fields.nameSize,
    0 /* check */,
  ];
  return Buffer.from(`070701${values.map(hex8).join('')}`, 'ascii');
}

/** Serialises entries in the order given (parents must precede their children). */
export function writeCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let offset = 0;
  const push = (b: Buffer): void => {
    parts.push(b);
    offset += b.length;
  };
  const add = (name: string, mode: number, nlink: number, data: Uint8Array, rdevMajor = 0, rdevMinor = 0, ino = 0): void => {
    const nameBytes = Buffer.from(`${name}\0`, 'utf8');
    push(header({ ino, mode, nlink, size: data.length, rdevMajor, rdevMinor, nameSize: nameBytes.length }));
    push(nameBytes);
    push(pad4(offset));
    if (data.length > 0) {
      push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
      push(pad4(offset));
    }
  };
  let ino = 1;
  for (const entry of entries) {
    const name = entry.path.replace(/^\/+/, '');
    if (name === '' || name.split('/').includes('..')) throw new Error(`cpio: bad entry path "${entry.path}"`);
    switch (entry.type) {
      case 'dir':
        add(name, S_IFDIR | (entry.mode ?? 0o755), 2, new Uint8Array(), 0, 0, ino++);
        break;
      case 'file':
        add(name, S_IFREG | (entry.mode ?? 0o644), 1, entry.data, 0, 0, ino++);
        break;
      case 'symlink':
        add(name, S_IFLNK | 0o777, 1, Buffer.from(entry.target, 'utf8'), 0, 0, ino++);
        break;
      case 'chardev':
        add(name, S_IFCHR | (entry.mode ?? 0o600), 1, new Uint8Array(), entry.major, entry.minor, ino++);
        break;
    }
  }
  add('TRAILER!!!', 0, 1, new Uint8Array());
  return Buffer.concat(parts);
}
