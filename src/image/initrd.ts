// The initramfs: busybox, the kernel modules the guest needs before it can see its disks, and
// /init (src/guest/init/initrd-init), packed as a gzip-compressed newc cpio archive.
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { run } from '../shared/exec.ts';
import { writeCpio, type CpioEntry } from './cpio.ts';
import { parseModuleIndex, selectModules } from './modules.ts';

export interface InitrdInput {
  /** Unpacked kernel package (holds lib/modules/<release>). */
  readonly kernelRoot: string;
  readonly release: string;
  readonly modules: readonly string[];
  readonly initScript: string;
  readonly busybox: string;
}

export interface InitrdResult {
  readonly data: Buffer;
  readonly loadOrder: readonly string[];
  readonly builtin: readonly string[];
}

async function decompressModule(path: string): Promise<Buffer> {
  if (path.endsWith('.ko')) return readFile(path);
  if (path.endsWith('.ko.xz')) return runBuffer('xz', ['-dc', path]);
  if (path.endsWith('.ko.zst')) return runBuffer('zstd', ['-dcq', path]);
  if (path.endsWith('.ko.gz')) return gunzipSync(await readFile(path));
  throw new Error(`unknown kernel module format: ${path}`);
}

function runBuffer(cmd: string, args: readonly string[]): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { encoding: 'buffer', maxBuffer: 256 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${cmd} ${args.join(' ')}: ${stderr.toString().trim() || error.message}`));
      else resolve(stdout);
    });
  });
}

/** Names of busybox's applets (`busybox --list`). */
async function busyboxApplets(busybox: string): Promise<string[]> {
  const { stdout } = await run(busybox, ['--list']);
  return stdout
    .split('\n')
    .map((s) => s.trim())
    .filter((s) => /^[a-z0-9_.[-]+$/.test(s) && s !== 'busybox');
}

export async function buildInitrd(input: InitrdInput): Promise<InitrdResult> {
  const moduleDir = join(input.kernelRoot, 'lib/modules', input.release);
  const [dep, builtinList] = await Promise.all([
    readFile(join(moduleDir, 'modules.dep'), 'utf8'),
    readFile(join(moduleDir, 'modules.builtin'), 'utf8').catch(() => ''),
  ]);
  const selection = selectModules(parseModuleIndex(dep, builtinList), input.modules);

  const entries: CpioEntry[] = [];
  const dirs = new Set<string>();
  const addDir = (path: string, mode = 0o755): void => {
    const parts = path.split('/').filter((p) => p !== '');
    for (let i = 1; i <= parts.length; i++) {
      const p = parts.slice(0, i).join('/');
      if (!dirs.has(p)) {
        dirs.add(p);
        entries.push({ type: 'dir', path: p, mode: i === parts.length ? mode : 0o755 });
      }
    }
  };
  for (const d of ['bin', 'sbin', 'etc/clarateach', 'proc', 'sys', 'run', 'tmp', 'mnt/base', 'mnt/layer', 'mnt/root']) addDir(d);
  addDir('dev');
  entries.push({ type: 'chardev', path: 'dev/console', major: 5, minor: 1, mode: 0o600 });
  entries.push({ type: 'chardev', path: 'dev/null', major: 1, minor: 3, mode: 0o666 });

  entries.push({ type: 'file', path: 'bin/busybox', data: await readFile(input.busybox), mode: 0o755 });
  for (const applet of await busyboxApplets(input.busybox)) {
    entries.push({ type: 'symlink', path: `bin/${applet}`, target: 'busybox' });
  }
  entries.push({ type: 'file', path: 'init', data: Buffer.from(input.initScript, 'utf8'), mode: 0o755 });

  // Modules are stored uncompressed (busybox insmod reads plain .ko), at their usual paths.
  const loadOrder: string[] = [];
  for (const rel of selection.loadOrder) {
    const plain = rel.replace(/\.(xz|zst|gz)$/, '');
    const target = `lib/modules/${input.release}/${plain}`;
    addDir(target.slice(0, target.lastIndexOf('/')));
    entries.push({ type: 'file', path: target, data: await decompressModule(join(moduleDir, rel)), mode: 0o644 });
    loadOrder.push(plain);
  }
  entries.push({ type: 'file', path: 'etc/clarateach/modules', data: Buffer.from(loadOrder.map((m) => `${m}\n`).join(''), 'utf8') });

  const data = gzipSync(writeCpio(entries), { level: 9 });
  return { data, loadOrder, builtin: selection.builtin };
}
