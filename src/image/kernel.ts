// The guest kernel: Debian's cloud kernel package, fetched with `apt-get download` (never
// installed on the host), unpacked with `dpkg-deb -x`, and its bzImage turned into the
// uncompressed ELF `vmlinux` that Firecracker needs and QEMU microvm boots through the PVH entry.
import { spawn } from 'node:child_process';
import { gunzipSync } from 'node:zlib';
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CommandError, run } from '../shared/exec.ts';
import { decompressLz4Legacy } from './lz4.ts';
import { exists, tempPathFor } from './util.ts';

export interface KernelPackage {
  /** The versioned binary package, e.g. `linux-image-6.1.0-57-cloud-amd64`. */
  readonly name: string;
  /** Its Debian version, e.g. `6.1.192-3`. */
  readonly version: string;
}

export class KernelError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KernelError';
  }
}

function field(record: string, name: string): string | undefined {
  const match = new RegExp(`^${name}: (.*)$`, 'm').exec(record);
  return match?.[1]?.trim();
}

async function aptShow(pkg: string): Promise<string> {
  try {
    const { stdout } = await run('apt-cache', ['show', '--no-all-versions', pkg], { timeoutMs: 60_000 });
    if (stdout.trim() === '') throw new KernelError(`apt knows no package ${pkg}`);
    return stdout;
  } catch (error) {
    if (error instanceof KernelError) throw error;
    throw new KernelError(`cannot look up ${pkg} with apt-cache (run apt-get update?): ${(error as Error).message}`);
  }
}

/**
 * Resolves a kernel package name (a meta package such as `linux-image-cloud-amd64`, or a versioned
 * one) to the versioned package and its candidate version, from the local apt lists (no network).
 */
export async function resolveKernelPackage(pkg: string): Promise<KernelPackage> {
  const record = await aptShow(pkg);
  const depends = field(record, 'Depends') ?? '';
  const image = depends
    .split(',')
    .map((d) => d.trim().split(/[\s|(]/)[0] ?? '')
    .find((d) => /^linux-image-\d/.test(d));
  if (image === undefined) {
    const version = field(record, 'Version');
    if (!version) throw new KernelError(`apt-cache show ${pkg} has no Version`);
    return { name: pkg, version };
  }
  const imageRecord = await aptShow(image);
  const version = field(imageRecord, 'Version');
  if (!version) throw new KernelError(`apt-cache show ${image} has no Version`);
  return { name: image, version };
}

/** Downloads the .deb into `dir` unless it is there already; returns its path. */
export async function downloadKernelPackage(pkg: KernelPackage, dir: string): Promise<string> {
  await mkdir(dir, { recursive: true });
  const arch = 'amd64';
  // apt-get names downloads NAME_VERSION_ARCH.deb with ':' in the version escaped as %3a.
  const debName = `${pkg.name}_${pkg.version.replace(/:/g, '%3a')}_${arch}.deb`;
  const debPath = join(dir, debName);
  if (await exists(debPath)) return debPath;
  const work = tempPathFor(join(dir, 'download'));
  await mkdir(work, { recursive: true });
  try {
    const args = ['-q', '-o', 'APT::Sandbox::User=root', 'download', `${pkg.name}=${pkg.version}`];
    try {
      await run('apt-get', args, { cwd: work, timeoutMs: 15 * 60_000 });
    } catch (error) {
      // Stale package lists point at files the mirror no longer has: refresh them once.
      if (!(error instanceof CommandError)) throw error;
      await run('apt-get', ['-q', 'update'], { timeoutMs: 15 * 60_000 });
      await run('apt-get', args, { cwd: work, timeoutMs: 15 * 60_000 });
    }
    const got = (await readdir(work)).find((n) => n.endsWith('.deb'));
    if (!got) throw new KernelError(`apt-get download ${pkg.name}=${pkg.version} produced no .deb`);
    await rename(join(work, got), debPath);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return debPath;
}

/**
 * Unpacks the package into `dir` (once; an interrupted unpack is redone) and generates
 * modules.dep with depmod. Returns the kernel release (`uname -r`).
 */
export async function unpackKernelPackage(debPath: string, dir: string): Promise<string> {
  if (!(await exists(join(dir, '.complete')))) {
    await rm(dir, { recursive: true, force: true });
    const temp = tempPathFor(dir);
    try {
      await mkdir(temp, { recursive: true });
      await run('dpkg-deb', ['-x', debPath, temp], { timeoutMs: 10 * 60_000 });
      const release = await kernelRelease(temp);
      await run('depmod', ['-b', temp, release], { timeoutMs: 5 * 60_000 });
      await writeFile(join(temp, '.complete'), `${release}\n`);
      await rename(temp, dir);
    } catch (error) {
      await rm(temp, { recursive: true, force: true });
      if (!(await exists(join(dir, '.complete')))) throw error;
    }
  }
  return kernelRelease(dir);
}

async function kernelRelease(root: string): Promise<string> {
  const releases = await readdir(join(root, 'lib/modules')).catch(() => [] as string[]);
  if (releases.length !== 1 || releases[0] === undefined) {
    throw new KernelError(`expected exactly one /lib/modules/<release> in the kernel package, found ${releases.length}`);
  }
  return releases[0];
}

export function bzImagePath(root: string, release: string): string {
  return join(root, 'boot', `vmlinuz-${release}`);
}

export type KernelCompression = 'gzip' | 'xz' | 'lzma' | 'zstd' | 'lz4' | 'bzip2' | 'lzo';

interface Payload {
  readonly data: Buffer;
  readonly compression: KernelCompression;
}

const MAGICS: ReadonlyArray<readonly [KernelCompression, readonly number[]]> = [
  ['gzip', [0x1f, 0x8b, 0x08]],
  ['xz', [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]],
  ['lzma', [0x5d, 0x00, 0x00]],
  ['bzip2', [0x42, 0x5a, 0x68]],
  ['lzo', [0x89, 0x4c, 0x5a, 0x4f, 0x00, 0x0d, 0x0a, 0x1a, 0x0a]],
  ['lz4', [0x02, 0x21, 0x4c, 0x18]],
  ['zstd', [0x28, 0xb5, 0x2f, 0xfd]],
];

function compressionOf(data: Uint8Array): KernelCompression | undefined {
  for (const [name, magic] of MAGICS) {
    if (magic.every((b, i) => data[i] === b)) return name;
  }
  return undefined;
}

/**
 * The compressed kernel inside a bzImage, located through the boot protocol header
 * (`setup_sects`, `payload_offset`, `payload_length`; protocol 2.08+).
 */
export function bzImagePayload(image: Buffer): Payload {
  if (image.length < 0x250 || image.readUInt32LE(0x202) !== 0x53726448 /* "HdrS" */) {
    throw new KernelError('not a bzImage (no HdrS boot header)');
  }
  const protocol = image.readUInt16LE(0x206);
  if (protocol < 0x208) throw new KernelError(`boot protocol ${protocol.toString(16)} predates payload fields`);
  const setupSects = image[0x1f1] || 4;
  const start = (setupSects + 1) * 512 + image.readUInt32LE(0x248);
  const length = image.readUInt32LE(0x24c);
  if (start + length > image.length) throw new KernelError('bzImage payload runs past the end of the file');
  const data = image.subarray(start, start + length);
  const compression = compressionOf(data);
  if (!compression) throw new KernelError(`unknown kernel compression (magic ${data.subarray(0, 4).toString('hex')})`);
  return { data, compression };
}

function pipeThrough(cmd: string, args: readonly string[], input: Uint8Array): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', (e) => reject(new KernelError(`${cmd}: ${e.message}`)));
    child.on('close', (code) => {
      if (code === 0) resolve(Buffer.concat(out));
      else reject(new KernelError(`${cmd} ${args.join(' ')} failed (exit ${code}): ${Buffer.concat(err).toString().trim()}`));
    });
    child.stdin.on('error', () => {});
    child.stdin.end(input);
  });
}

/** Decompresses a kernel payload. Formats other than gzip carry a 4-byte size trailer. */
export async function decompressPayload(payload: Payload): Promise<Buffer> {
  const { data, compression } = payload;
  const body = compression === 'gzip' ? data : data.subarray(0, data.length - 4);
  const expected = compression === 'gzip' ? undefined : data.readUInt32LE(data.length - 4);
  let out: Buffer;
  switch (compression) {
    case 'gzip':
      out = gunzipSync(body);
      break;
    case 'lz4':
      out = decompressLz4Legacy(data).data;
      break;
    case 'xz':
      out = await pipeThrough('xz', ['-dc', '--single-stream'], body);
      break;
    case 'lzma':
      out = await pipeThrough('xz', ['-dc', '--format=lzma'], body);
      break;
    case 'zstd':
      out = await pipeThrough('zstd', ['-dcq'], body);
      break;
    case 'bzip2':
      out = await pipeThrough('bzip2', ['-dc'], body);
      break;
    case 'lzo':
      out = await pipeThrough('lzop', ['-dc'], body);
      break;
  }
  if (expected !== undefined && out.length !== expected) {
    throw new KernelError(`${compression} kernel decompressed to ${out.length} bytes, the image says ${expected}`);
  }
  return out;
}

export interface ElfInfo {
  /** Has the Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): QEMU can boot the ELF directly. */
  readonly pvh: boolean;
}

/** Checks that `elf` is a 64-bit x86-64 executable and reports its boot notes. */
export function inspectVmlinux(elf: Buffer): ElfInfo {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46) throw new KernelError('vmlinux is not an ELF file');
  if (elf[4] !== 2 || elf[5] !== 1) throw new KernelError('vmlinux is not a 64-bit little-endian ELF');
  if (elf.readUInt16LE(16) !== 2) throw new KernelError('vmlinux is not an ELF executable');
  if (elf.readUInt16LE(18) !== 62) throw new KernelError('vmlinux is not an x86-64 ELF');
  const phoff = Number(elf.readBigUInt64LE(32));
  const phentsize = elf.readUInt16LE(54);
  const phnum = elf.readUInt16LE(56);
  let pvh = false;
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 56 > elf.length) throw new KernelError('vmlinux program headers are truncated');
    if (elf.readUInt32LE(ph) !== 4 /* PT_NOTE */) continue;
    const offset = Number(elf.readBigUInt64LE(ph + 8));
    const size = Number(elf.readBigUInt64LE(ph + 32));
    let pos = offset;
    while (pos + 12 <= offset + size && pos + 12 <= elf.length) {
      const nameSize = elf.readUInt32LE(pos);
      const descSize = elf.readUInt32LE(pos + 4);
      const type = elf.readUInt32LE(pos + 8);
      const name = elf
        .subarray(pos + 12, pos + 12 + nameSize)
        .toString('latin1')
        .replace(/\0+$/, '');
      if (name === 'Xen' && type === 18) pvh = true;
      pos += 12 + Math.ceil(nameSize / 4) * 4 + Math.ceil(descSize / 4) * 4;
    }
  }
  return { pvh };
}

export interface ExtractedKernel {
  readonly vmlinux: Buffer;
  readonly compression: KernelCompression;
  readonly info: ElfInfo;
}

/** extract-vmlinux: bzImage file -> verified uncompressed ELF. */
export async function extractVmlinux(bzImageFile: string): Promise<ExtractedKernel> {
  const image = await readFile(bzImageFile);
  const payload = bzImagePayload(image);
  const vmlinux = await decompressPayload(payload);
  const info = inspectVmlinux(vmlinux);
  return { vmlinux, compression: payload.compression, info };
}
