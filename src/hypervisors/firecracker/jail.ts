// The jail of one VM, around Firecracker's jailer (docs/jailer.md): which unprivileged uid/gid the
// VMM runs as, what goes into `<chroot_base>/<exec name>/<id>/root` before the jailer runs (the
// jailed Firecracker sees nothing else), and how it all goes again on stop.
//
// uid/gid. Each VM runs as its own user and group: uid = gid = uidBase + slot, where the slot is
// the low 16 bits of the guest's IPv4 address, which the VM's MAC carries in its last four octets
// (network/tap.ts macForIp: 06:00:<a>:<b>:<c>:<d>, slot = c*256 + d). The lifecycle never gives
// two live VMs the same address, so in a bridge subnet of /16 or smaller no two live VMs share a
// uid; start() also refuses a uid that some live process already runs as. The default base,
// 2_000_000_000, is far above login users (1000-60000), systemd's dynamic users (61184-65519) and
// the usual /etc/subuid ranges (100000 + 65536 n), and below 2^31.
import { constants as fsConstants } from 'node:fs';
import {
  access,
  chmod,
  chown,
  copyFile,
  link,
  mkdir,
  readdir,
  readFile,
  realpath,
  rename,
  rm,
  stat,
  unlink,
  writeFile,
} from 'node:fs/promises';
import { basename, delimiter, dirname, isAbsolute, join, resolve } from 'node:path';
import type { VmLaunchSpec } from '../../vms/ports.ts';
import { parseMountinfo } from '../../host/cgroups/index.ts';
import { run } from '../../shared/exec.ts';
import { IMAGE_FILES } from '../../image/layout.ts';

export const DEFAULT_JAIL_UID_BASE = 2_000_000_000;
const MAX_ID = 0xffff_fffe;
const SLOTS = 0x1_0000;

/** Names of the VM's files inside the jail; the API gets `/<name>`. */
export const JAIL_FILES = {
  kernel: IMAGE_FILES.kernel,
  initrd: IMAGE_FILES.initrd,
  baseDisk: IMAGE_FILES.rootfs,
  layerDisk: 'layer.ext4',
} as const;

/** Copies of images made when the chroot base is on another filesystem (hard-linked into jails from here). */
export const JAIL_CACHE_DIR = '.clarateach-images';

export interface JailIds {
  readonly uid: number;
  readonly gid: number;
  /** 0..65535: the low 16 bits of the guest's IPv4 address. */
  readonly slot: number;
}

/** The uid/gid the VM's jailed Firecracker runs as (see the top of this file). */
export function jailIdsForVm(mac: string, uidBase = DEFAULT_JAIL_UID_BASE): JailIds {
  if (!Number.isInteger(uidBase) || uidBase < 1000 || uidBase + SLOTS - 1 > MAX_ID) {
    throw new RangeError(`the jail uid base must be an integer in 1000..${MAX_ID - SLOTS + 1}, got ${uidBase}`);
  }
  const octets = mac.split(':');
  if (octets.length !== 6 || octets.some((o) => !/^[0-9a-fA-F]{2}$/.test(o))) throw new Error(`not a MAC address: "${mac}"`);
  const slot = parseInt(octets[4] ?? '0', 16) * 256 + parseInt(octets[5] ?? '0', 16);
  return { uid: uidBase + slot, gid: uidBase + slot, slot };
}

/** The launch spec as the jailed Firecracker sees it: every file at the root of its jail. */
export function jailedSpec(spec: VmLaunchSpec): VmLaunchSpec {
  return {
    ...spec,
    kernelPath: `/${JAIL_FILES.kernel}`,
    initrdPath: `/${JAIL_FILES.initrd}`,
    baseDiskPath: `/${JAIL_FILES.baseDisk}`,
    layerDiskPath: `/${JAIL_FILES.layerDisk}`,
  };
}

/** An executable's absolute path: found on PATH when it has no slash; symlinks resolved if asked. */
export async function resolveExecutable(file: string, canonical: boolean): Promise<string> {
  const candidates = file.includes('/')
    ? [resolve(file)]
    : (process.env.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin')
        .split(delimiter)
        .filter((dir) => isAbsolute(dir))
        .map((dir) => join(dir, file));
  for (const candidate of candidates) {
    try {
      await access(candidate, fsConstants.X_OK);
      if (!(await stat(candidate)).isFile()) continue;
      return canonical ? await realpath(candidate) : candidate;
    } catch {
      // next
    }
  }
  throw new Error(file.includes('/') ? `${file} is not an executable file` : `${file} not found on PATH`);
}

export type StagedHow = 'linked' | 'copied' | 'bound';

function code(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
}

/**
 * Hard-links `src` to `dest`; across filesystems, copies it once into `<cacheDir>` (keyed by the
 * source's identity and mtime, older copies of the same file dropped) and hard-links that copy.
 */
async function linkOrCopy(src: string, dest: string, cacheDir: string): Promise<StagedHow> {
  try {
    await link(src, dest);
    return 'linked';
  } catch (error) {
    if (code(error) !== 'EXDEV') throw new Error(`cannot hard-link ${src} to ${dest}: ${(error as Error).message}`);
  }
  const st = await stat(src);
  const name = basename(src);
  const key = `${name}.${st.dev}-${st.ino}-${st.size}-${Math.trunc(st.mtimeMs)}`;
  const cached = join(cacheDir, key);
  await mkdir(cacheDir, { recursive: true, mode: 0o755 });
  try {
    await stat(cached);
  } catch {
    const tmp = `${cached}.tmp-${process.pid}-${Date.now()}`;
    await copyFile(src, tmp, fsConstants.COPYFILE_FICLONE);
    await chmod(tmp, st.mode & 0o777);
    await rename(tmp, cached);
    // Older copies of this file: jails that use them keep their own hard link.
    for (const entry of await readdir(cacheDir)) {
      if (entry.startsWith(`${name}.`) && entry !== key && !entry.includes('.tmp-')) await unlink(join(cacheDir, entry)).catch(() => {});
    }
  }
  await link(cached, dest);
  return 'copied';
}

/** Hard-links the (writable) layer into the jail; across filesystems, bind-mounts it. */
async function linkOrBind(src: string, dest: string): Promise<StagedHow> {
  try {
    await link(src, dest);
    return 'linked';
  } catch (error) {
    if (code(error) !== 'EXDEV') throw new Error(`cannot hard-link ${src} to ${dest}: ${(error as Error).message}`);
  }
  await writeFile(dest, '', { flag: 'wx', mode: 0o600 });
  await run('mount', ['--bind', src, dest]);
  return 'bound';
}

async function requireReadableByOthers(path: string, uid: number): Promise<void> {
  const st = await stat(path);
  if ((st.mode & 0o004) === 0) {
    throw new Error(
      `the jailed VMM (uid ${uid}) cannot read ${path} (mode ${(st.mode & 0o777).toString(8)}): make it readable by others (chmod o+r)`,
    );
  }
}

export interface StageInput {
  readonly chrootBaseDir: string;
  /** `<chroot_base>/<exec name>/<id>/root`. */
  readonly chrootDir: string;
  readonly spec: VmLaunchSpec;
  readonly ids: JailIds;
}

export interface StagedJail {
  readonly kernel: StagedHow;
  readonly initrd: StagedHow;
  readonly baseDisk: StagedHow;
  readonly layerDisk: StagedHow;
}

/**
 * Puts the VM's files at the root of its jail before the jailer runs: kernel, initrd and the
 * shared read-only base image hard-linked (or copied, across filesystems), readable by everyone as
 * they are; the VM's writable layer hard-linked (or bind-mounted) and given to the VM's uid/gid,
 * mode 0600. The jailer itself then chowns the chroot directory and creates /dev/kvm, /dev/net/tun.
 */
export async function stageJail(input: StageInput): Promise<StagedJail> {
  const { chrootDir, spec, ids } = input;
  // The directories above the jail's root as the jailer makes them (create_dir_all, 0755 less the
  // umask); the root itself is private (the jailer then gives it to the VM's uid).
  await mkdir(dirname(chrootDir), { recursive: true });
  await mkdir(chrootDir, { recursive: true, mode: 0o700 });
  const cacheDir = join(input.chrootBaseDir, JAIL_CACHE_DIR);
  const readOnly = async (src: string, name: string): Promise<StagedHow> => {
    await requireReadableByOthers(src, ids.uid);
    return linkOrCopy(src, join(chrootDir, name), cacheDir);
  };
  const kernel = await readOnly(spec.kernelPath, JAIL_FILES.kernel);
  const initrd = await readOnly(spec.initrdPath, JAIL_FILES.initrd);
  const baseDisk = await readOnly(spec.baseDiskPath, JAIL_FILES.baseDisk);
  await chown(spec.layerDiskPath, ids.uid, ids.gid);
  await chmod(spec.layerDiskPath, 0o600);
  const layerDisk = await linkOrBind(spec.layerDiskPath, join(chrootDir, JAIL_FILES.layerDisk));
  return { kernel, initrd, baseDisk, layerDisk };
}

/** Mount points at or below `dir` (a bind-mounted layer), deepest first. */
async function mountsBelow(dir: string): Promise<string[]> {
  const text = await readFile('/proc/self/mountinfo', 'utf8');
  const prefix = `${dir}/`;
  return parseMountinfo(text)
    .map((m) => m.mountPoint)
    .filter((p) => p === dir || p.startsWith(prefix))
    .sort((a, b) => b.length - a.length);
}

/** Removes a VM's jail directory (`<chroot_base>/<exec name>/<id>`), unmounting what is mounted in it. */
export async function removeJail(jailDir: string): Promise<void> {
  if (!isAbsolute(jailDir) || jailDir.split('/').filter(Boolean).length < 3) {
    throw new Error(`refusing to remove "${jailDir}": not a jail directory (<chroot_base>/<exec name>/<id>)`);
  }
  for (const mountPoint of await mountsBelow(jailDir)) {
    try {
      await run('umount', [mountPoint]);
    } catch {
      await run('umount', ['--lazy', mountPoint]);
    }
  }
  await rm(jailDir, { recursive: true, force: true });
}

/** Removes the jails of instance `id` under every exec name in the chroot base (a renamed binary). */
export async function removeJailsOf(chrootBaseDir: string, id: string): Promise<string[]> {
  let entries: string[];
  try {
    entries = (await readdir(chrootBaseDir, { withFileTypes: true }))
      .filter((e) => e.isDirectory() && !e.name.startsWith('.'))
      .map((e) => e.name);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const execName of entries) {
    const jailDir = join(chrootBaseDir, execName, id);
    try {
      await stat(jailDir);
    } catch {
      continue;
    }
    await removeJail(jailDir);
    removed.push(jailDir);
  }
  return removed;
}

/**
 * Ids of every jail under the chroot base (`<chroot_base>/<exec name>/<id>`), for orphan cleanup.
 * Only exec names the jailer accepts (containing "firecracker") and ids Firecracker accepts count:
 * anything else there is not ours.
 */
export async function listJailIds(chrootBaseDir: string): Promise<string[]> {
  const dirsIn = async (dir: string): Promise<string[]> => {
    try {
      return (await readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
    } catch (error) {
      if (code(error) === 'ENOENT') return [];
      throw error;
    }
  };
  const ids = new Set<string>();
  for (const execName of await dirsIn(chrootBaseDir)) {
    if (execName.startsWith('.') || !execName.includes('firecracker')) continue;
    for (const id of await dirsIn(join(chrootBaseDir, execName))) if (/^[A-Za-z0-9-]{1,64}$/.test(id)) ids.add(id);
  }
  return [...ids].sort();
}

/** Live (non-zombie) processes whose real, effective, saved or filesystem uid is `uid`. */
export async function processesOfUid(uid: number): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    let status: string;
    try {
      status = await readFile(`/proc/${entry}/status`, 'utf8');
    } catch {
      continue;
    }
    if (/^State:\s+[ZX]/m.test(status)) continue;
    const uids = /^Uid:\s+(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/).map(Number) ?? [];
    if (uids.includes(uid)) pids.push(Number(entry));
  }
  return pids;
}
