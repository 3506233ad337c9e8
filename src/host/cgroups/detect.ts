// Which cgroup hierarchy this host uses for the CPU and memory controllers, read from
// /proc/self/mountinfo (proc(5)): cgroup v1 (one `cgroup` mount per controller or group of
// controllers, e.g. /sys/fs/cgroup/cpu and /sys/fs/cgroup/memory) or cgroup v2 (one `cgroup2`
// mount, /sys/fs/cgroup, listing its controllers in cgroup.controllers). A "hybrid" host mounts
// both; a controller bound to a v1 hierarchy is then missing from the v2 one, so v1 wins.
import { readFile } from 'node:fs/promises';
import { CgroupError, errorText } from './errors.ts';

export type CgroupVersion = 1 | 2;

/** The controllers a VM's limits use. */
export const VM_CONTROLLERS = ['cpu', 'memory'] as const;
export type VmController = (typeof VM_CONTROLLERS)[number];

export interface CgroupLayout {
  readonly version: CgroupVersion;
  /** Mount point of the hierarchy that holds each controller; with v2 both are the unified mount. */
  readonly mounts: Readonly<Record<VmController, string>>;
}

export interface DetectOptions {
  /** Only mounts at or below this directory count; default /sys/fs/cgroup. */
  readonly root?: string;
  /** Default /proc/self/mountinfo; tests point it at a file describing a fake tree. */
  readonly mountinfoPath?: string;
}

/** One line of /proc/PID/mountinfo. */
export interface MountEntry {
  /** Root of the mount within its filesystem (field 4). */
  readonly root: string;
  readonly mountPoint: string;
  readonly fsType: string;
  readonly source: string;
  /** Per-superblock options; for a v1 cgroup mount these name its controllers. */
  readonly superOptions: readonly string[];
}

/** mountinfo escapes space, tab, newline and backslash as \ooo. */
function unescapeField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** Parses /proc/PID/mountinfo text; malformed lines are skipped. */
export function parseMountinfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.trim().split(' ');
    const separator = fields.indexOf('-', 6);
    if (separator < 0 || fields.length < separator + 4) continue;
    entries.push({
      root: unescapeField(fields[3] ?? ''),
      mountPoint: unescapeField(fields[4] ?? ''),
      fsType: fields[separator + 1] ?? '',
      source: unescapeField(fields[separator + 2] ?? ''),
      superOptions: (fields[separator + 3] ?? '').split(','),
    });
  }
  return entries;
}

function isAtOrBelow(path: string, dir: string): boolean {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  return path === dir || path.startsWith(prefix);
}

async function v2Controllers(mountPoint: string): Promise<string[]> {
  try {
    return (await readFile(`${mountPoint}/cgroup.controllers`, 'utf8')).split(/\s+/).filter(Boolean);
  } catch {
    return [];
  }
}

/**
 * Finds the hierarchies holding the cpu and memory controllers. v1 when both are bound to v1
 * mounts; otherwise v2 when a cgroup2 mount (the one at `root` first) offers both.
 */
export async function detectCgroupLayout(options: DetectOptions = {}): Promise<CgroupLayout> {
  const root = options.root ?? '/sys/fs/cgroup';
  const mountinfoPath = options.mountinfoPath ?? '/proc/self/mountinfo';
  let text: string;
  try {
    text = await readFile(mountinfoPath, 'utf8');
  } catch (error) {
    throw new CgroupError(`cannot read ${mountinfoPath}: ${errorText(error)}`, mountinfoPath);
  }
  const mounts = parseMountinfo(text).filter((m) => isAtOrBelow(m.mountPoint, root));

  const v1: Partial<Record<VmController, string>> = {};
  for (const mount of mounts) {
    if (mount.fsType !== 'cgroup') continue;
    for (const controller of VM_CONTROLLERS) {
      if (v1[controller] === undefined && mount.superOptions.includes(controller)) v1[controller] = mount.mountPoint;
    }
  }
  if (v1.cpu !== undefined && v1.memory !== undefined) return { version: 1, mounts: { cpu: v1.cpu, memory: v1.memory } };

  const unified = mounts
    .filter((m) => m.fsType === 'cgroup2')
    .sort((a, b) => Number(b.mountPoint === root) - Number(a.mountPoint === root));
  const seen: string[] = [];
  for (const mount of unified) {
    const controllers = await v2Controllers(mount.mountPoint);
    if (controllers.includes('cpu') && controllers.includes('memory')) {
      return { version: 2, mounts: { cpu: mount.mountPoint, memory: mount.mountPoint } };
    }
    seen.push(`${mount.mountPoint} (cgroup2, controllers: ${controllers.join(' ') || 'none'})`);
  }
  const v1Seen = VM_CONTROLLERS.filter((c) => v1[c] !== undefined).map((c) => `${c} at ${v1[c]} (cgroup v1)`);
  const found = [...v1Seen, ...seen];
  throw new CgroupError(
    `no cgroup hierarchy under ${root} offers both the cpu and the memory controller` +
      ` (${found.length > 0 ? `found ${found.join('; ')}` : 'no cgroup mounts'}, from ${mountinfoPath})`,
    mountinfoPath,
  );
}

/** The cgroups of a process, from /proc/PID/cgroup: the v2 path and each v1 controller's path. */
export interface ProcessCgroups {
  /** The `0::/path` line: the process's cgroup in the unified hierarchy. */
  readonly unified?: string;
  /** v1 controller (or `name=...`) -> path. */
  readonly v1: Readonly<Record<string, string>>;
}

export function parseProcCgroup(text: string): ProcessCgroups {
  let unified: string | undefined;
  const v1: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const match = /^(\d+):([^:]*):(.*)$/.exec(line.trim());
    if (!match) continue;
    const [, id, controllers = '', path = ''] = match;
    if (id === '0' && controllers === '') unified = path;
    else for (const controller of controllers.split(',')) if (controller) v1[controller] = path;
  }
  return unified === undefined ? { v1 } : { unified, v1 };
}

/** Reads /proc/PID/cgroup (`self` for this process). */
export async function readProcessCgroups(pid: number | 'self', procDir = '/proc'): Promise<ProcessCgroups> {
  const file = `${procDir}/${pid}/cgroup`;
  try {
    return parseProcCgroup(await readFile(file, 'utf8'));
  } catch (error) {
    throw new CgroupError(`cannot read ${file}: ${errorText(error)}`, file);
  }
}

/** The cgroup path (relative to its hierarchy, starting with `/`) of a process for each VM controller. */
export function cgroupPathsOf(cgroups: ProcessCgroups, layout: CgroupLayout): Record<VmController, string | undefined> {
  if (layout.version === 2) return { cpu: cgroups.unified, memory: cgroups.unified };
  return { cpu: cgroups.v1.cpu, memory: cgroups.v1.memory };
}
