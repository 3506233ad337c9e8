// The jail of one VM, around Firecracker's jailer (docs/jailer.md): which unprivileged uid/gid the
// VMM runs as, the paths the jailed Firecracker sees, and how a jail goes again on stop. What goes
// into it before the jailer runs is jail-stage.ts.
//
// uid/gid. Each VM runs as its own user and group: uid = gid = uidBase + slot, where the slot is
// the low 16 bits of the guest's IPv4 address, which the VM's MAC carries in its last four octets
// (network/tap.ts macForIp: 06:00:<a>:<b>:<c>:<d>, slot = c*256 + d). The lifecycle never gives
// two live VMs the same address, so in a bridge subnet of /16 or smaller no two live VMs share a
// uid; start() also refuses a uid that some live process already runs as. The default base,
// 2_000_000_000, is far above login users (1000-60000), systemd's dynamic users (61184-65519) and
// the usual /etc/subuid ranges (100000 + 65536 n), and below 2^31.
import { constants as fsConstants } from 'node:fs';
import { access, readdir, readFile, realpath, rm, stat } from 'node:fs/promises';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
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

export function errnoCode(error: unknown): string | undefined {
  return (error as NodeJS.ErrnoException | undefined)?.code;
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
      if (errnoCode(error) === 'ENOENT') return [];
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
