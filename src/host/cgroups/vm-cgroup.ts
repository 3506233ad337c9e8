// One cgroup per VM: `<hierarchy>/<parent>/<name>` (default parent `clarateach`), holding the VMM
// process, its CPU quota and its memory limit. With cgroup v2 that is one directory in the unified
// hierarchy, with the cpu and memory controllers enabled (cgroup.subtree_control) in every
// ancestor; with v1 it is the same relative path in the cpu hierarchy and in the memory one.
// Kernel interfaces: Documentation/admin-guide/cgroup-v2.rst, cgroup-v1/{cgroups,memory}.rst and
// scheduler/sched-bwc.rst.
import { mkdir, readdir, readFile, rmdir, stat, writeFile } from 'node:fs/promises';
import { isAbsolute, join, relative } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { exists } from '../../shared/files.ts';
import {
  cgroupPathsOf,
  detectCgroupLayout,
  readProcessCgroups,
  VM_CONTROLLERS,
  type CgroupLayout,
  type CgroupVersion,
  type DetectOptions,
  type VmController,
} from './detect.ts';
import { CgroupError, errnoOf, errorText } from './errors.ts';
import { vmCgroupSettings, type CgroupSetting, type VmLimits } from './limits.ts';

/** Parent of every VM cgroup, relative to the hierarchy's root (the jailer's `--parent-cgroup`). */
export const DEFAULT_PARENT_CGROUP = 'clarateach';

export interface CgroupPlacement {
  /** The hierarchies to use; detected (detectCgroupLayout) when absent. */
  readonly layout?: CgroupLayout;
  /** Options for that detection (tests point them at a fake tree). */
  readonly detect?: DetectOptions;
  /** Relative path of the parent cgroup; default `clarateach`. */
  readonly parent?: string;
  /**
   * `root` (default): `<mount>/<parent>/<name>`, where the jailer puts its cgroups too.
   * `self`: below this process's own cgroup in each hierarchy (tests, delegated subtrees); with
   * v2 that own cgroup must hold no processes once controllers are enabled for its children.
   */
  readonly relativeTo?: 'root' | 'self';
}

/** A placement with its directories worked out. */
export interface ResolvedPlacement {
  readonly layout: CgroupLayout;
  readonly parent: string;
  readonly relativeTo: 'root' | 'self';
  /** Absolute directory of the parent cgroup in each controller's hierarchy. */
  readonly parentDirs: Readonly<Record<VmController, string>>;
}

export type PlacementInput = CgroupPlacement | ResolvedPlacement;

export interface VmCgroupSpec extends VmLimits {
  /** Directory name of the VM's cgroup, e.g. the Firecracker instance id. */
  readonly name: string;
}

export interface RemoveOptions {
  /** How long to retry while the cgroup still has (exiting) processes; default 2 s. */
  readonly timeoutMs?: number;
}

/** Handle on one VM's cgroup. It may or may not exist (see exists()). */
export interface VmCgroup {
  readonly name: string;
  readonly version: CgroupVersion;
  /** Absolute directory of the cgroup in each controller's hierarchy (the same one with v2). */
  readonly dirs: Readonly<Record<VmController, string>>;
  /** Path as /proc/PID/cgroup shows it, per controller, e.g. `/clarateach/seat-1`. */
  readonly paths: Readonly<Record<VmController, string>>;
  /** Moves a process (all its threads) into the cgroup, in every hierarchy. */
  addProcess(pid: number): Promise<void>;
  /** Processes in the cgroup (in any of its hierarchies); [] when it does not exist. */
  pids(): Promise<number[]>;
  /** True when the process is in the cgroup in every hierarchy. */
  contains(pid: number): Promise<boolean>;
  exists(): Promise<boolean>;
  /** Removes the cgroup (rmdir); already gone is fine; retries briefly while processes exit. */
  remove(options?: RemoveOptions): Promise<void>;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

function validateName(name: string): void {
  if (!NAME.test(name)) {
    throw new CgroupError(`invalid cgroup name "${name}": 1..128 of A-Z a-z 0-9 _ . -, not starting with . _ or -`, name);
  }
}

function validateRelativePath(path: string, what: string): void {
  const parts = path.split('/');
  if (path === '' || isAbsolute(path) || parts.some((p) => p === '' || p === '.' || p === '..' || /[\0\n]/.test(p))) {
    throw new CgroupError(`${what} must be a relative path without empty, "." or ".." components, got "${path}"`, path);
  }
}

function distinct(dirs: Readonly<Record<VmController, string>>): string[] {
  return [...new Set(VM_CONTROLLERS.map((c) => dirs[c]))];
}

async function readCgroupFile(file: string): Promise<string> {
  try {
    return (await readFile(file, 'utf8')).trim();
  } catch (error) {
    throw new CgroupError(`cannot read ${file}: ${errorText(error)}`, file, undefined, errnoOf(error));
  }
}

async function writeCgroupFile(file: string, value: string, hint = ''): Promise<void> {
  try {
    await writeFile(file, value);
  } catch (error) {
    throw new CgroupError(`cannot write "${value}" to ${file}: ${errorText(error)}${hint}`, file, value, errnoOf(error));
  }
}

/** mkdir of one cgroup; true when this call created it. An existing directory is fine. */
async function mkdirCgroup(dir: string): Promise<boolean> {
  try {
    await mkdir(dir);
    return true;
  } catch (error) {
    if (errnoOf(error) === 'EEXIST') {
      if ((await stat(dir)).isDirectory()) return false;
      throw new CgroupError(`${dir} exists and is not a cgroup directory`, dir, undefined, 'EEXIST');
    }
    throw new CgroupError(`cannot create cgroup ${dir}: ${errorText(error)}`, dir, undefined, errnoOf(error));
  }
}

function isResolved(placement: PlacementInput): placement is ResolvedPlacement {
  return 'parentDirs' in placement;
}

/** Works out the parent directories of a placement (detecting the layout if needed). No writes. */
export async function resolvePlacement(placement: PlacementInput = {}): Promise<ResolvedPlacement> {
  if (isResolved(placement)) return placement;
  const layout = placement.layout ?? (await detectCgroupLayout(placement.detect));
  const parent = placement.parent ?? DEFAULT_PARENT_CGROUP;
  validateRelativePath(parent, 'the parent cgroup');
  const relativeTo = placement.relativeTo ?? 'root';
  let bases: Record<VmController, string> = { ...layout.mounts };
  if (relativeTo === 'self') {
    const own = cgroupPathsOf(await readProcessCgroups('self'), layout);
    const base = (controller: VmController): string => {
      const path = own[controller];
      if (path === undefined) throw new CgroupError(`/proc/self/cgroup names no ${controller} cgroup`, '/proc/self/cgroup');
      return join(layout.mounts[controller], path);
    };
    bases = { cpu: base('cpu'), memory: base('memory') };
  }
  return { layout, parent, relativeTo, parentDirs: { cpu: join(bases.cpu, parent), memory: join(bases.memory, parent) } };
}

const NO_INTERNAL_PROCESSES =
  ' (cgroup v2 enables controllers for the children of a cgroup only while it holds no processes itself: the "no internal process" rule)';

/** v2: makes sure cpu and memory are enabled for the children of `dir`. */
async function enableControllers(dir: string): Promise<void> {
  const subtreeControl = join(dir, 'cgroup.subtree_control');
  let enabled: string[] = [];
  try {
    enabled = (await readFile(subtreeControl, 'utf8')).split(/\s+/).map((c) => c.replace(/^\+/, ''));
  } catch {
    // A directory this module has just created in a fake tree; the kernel always has the file.
  }
  const missing = VM_CONTROLLERS.filter((c) => !enabled.includes(c));
  if (missing.length === 0) return;
  const controllersFile = join(dir, 'cgroup.controllers');
  if (await exists(controllersFile)) {
    const available = (await readCgroupFile(controllersFile)).split(/\s+/);
    const absent = missing.filter((c) => !available.includes(c));
    if (absent.length > 0) {
      throw new CgroupError(
        `${absent.length > 1 ? 'controllers' : 'controller'} ${absent.join(' and ')} not available in ${controllersFile} ("${available.join(' ')}"):` +
          ' bound to a cgroup v1 hierarchy, or not enabled in the parent cgroup',
        controllersFile,
      );
    }
  }
  await writeCgroupFile(subtreeControl, missing.map((c) => `+${c}`).join(' '), NO_INTERNAL_PROCESSES);
}

/**
 * Creates the parent cgroup (and its ancestors) in every hierarchy; with v2 also enables cpu and
 * memory for the children of every level from the hierarchy's root down to the parent.
 */
export async function ensureParentCgroup(placement: PlacementInput = {}): Promise<ResolvedPlacement> {
  const resolved = await resolvePlacement(placement);
  if (resolved.layout.version === 1) {
    for (const dir of distinct(resolved.parentDirs)) {
      try {
        await mkdir(dir, { recursive: true });
      } catch (error) {
        throw new CgroupError(`cannot create cgroup ${dir}: ${errorText(error)}`, dir, undefined, errnoOf(error));
      }
    }
    return resolved;
  }
  const mount = resolved.layout.mounts.cpu;
  let dir = mount;
  await enableControllers(dir);
  for (const part of relative(mount, resolved.parentDirs.cpu).split('/').filter(Boolean)) {
    dir = join(dir, part);
    await mkdirCgroup(dir);
    await enableControllers(dir);
  }
  return resolved;
}

/** True when the kernel offers this setting's file (checked in the parent cgroup). */
export async function isSettingSupported(placement: ResolvedPlacement, setting: CgroupSetting): Promise<boolean> {
  return !setting.optional || (await exists(join(placement.parentDirs[setting.controller], setting.file)));
}

class VmCgroupHandle implements VmCgroup {
  readonly dirs: Readonly<Record<VmController, string>>;
  readonly paths: Readonly<Record<VmController, string>>;

  constructor(
    readonly name: string,
    private readonly placement: ResolvedPlacement,
  ) {
    const { parentDirs, layout } = placement;
    this.dirs = { cpu: join(parentDirs.cpu, name), memory: join(parentDirs.memory, name) };
    const path = (c: VmController): string => `/${relative(layout.mounts[c], this.dirs[c])}`;
    this.paths = { cpu: path('cpu'), memory: path('memory') };
  }

  get version(): CgroupVersion {
    return this.placement.layout.version;
  }

  async addProcess(pid: number): Promise<void> {
    if (!Number.isInteger(pid) || pid <= 0) throw new RangeError(`not a pid: ${pid}`);
    for (const dir of distinct(this.dirs)) await writeCgroupFile(join(dir, 'cgroup.procs'), String(pid));
  }

  private async pidsIn(dir: string): Promise<number[]> {
    let text: string;
    try {
      text = await readFile(join(dir, 'cgroup.procs'), 'utf8');
    } catch (error) {
      if (errnoOf(error) === 'ENOENT') return [];
      throw new CgroupError(
        `cannot read ${join(dir, 'cgroup.procs')}: ${errorText(error)}`,
        join(dir, 'cgroup.procs'),
        undefined,
        errnoOf(error),
      );
    }
    return text
      .split('\n')
      .filter((l) => /^\d+$/.test(l.trim()))
      .map(Number);
  }

  async pids(): Promise<number[]> {
    const all = new Set<number>();
    for (const dir of distinct(this.dirs)) for (const pid of await this.pidsIn(dir)) all.add(pid);
    return [...all].sort((a, b) => a - b);
  }

  async contains(pid: number): Promise<boolean> {
    for (const dir of distinct(this.dirs)) if (!(await this.pidsIn(dir)).includes(pid)) return false;
    return true;
  }

  async exists(): Promise<boolean> {
    for (const dir of distinct(this.dirs)) if (await exists(dir)) return true;
    return false;
  }

  async remove(options: RemoveOptions = {}): Promise<void> {
    const timeoutMs = options.timeoutMs ?? 2_000;
    for (const dir of distinct(this.dirs)) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        try {
          await rmdir(dir);
          break;
        } catch (error) {
          const code = errnoOf(error);
          if (code === 'ENOENT') break;
          // EBUSY: processes (maybe just exiting) or child cgroups are still in it.
          if (code === 'EBUSY' && Date.now() < deadline) {
            await sleep(50);
            continue;
          }
          const pids = await this.pidsIn(dir).catch(() => []);
          const children = await readdir(dir, { withFileTypes: true })
            .then((entries) => entries.filter((e) => e.isDirectory()).map((e) => e.name))
            .catch(() => []);
          const detail = [
            pids.length > 0 ? `processes still in it: ${pids.join(', ')}` : '',
            children.length > 0 ? `child cgroups: ${children.join(', ')}` : '',
          ].filter(Boolean);
          throw new CgroupError(
            `cannot remove cgroup ${dir}: ${errorText(error)}${detail.length ? ` (${detail.join('; ')})` : ''}`,
            dir,
            undefined,
            code,
          );
        }
      }
    }
  }
}

/** A handle on VM cgroup `name` under the placement's parent, whether or not it exists. */
export async function openVmCgroup(name: string, placement: PlacementInput = {}): Promise<VmCgroup> {
  validateName(name);
  return new VmCgroupHandle(name, await resolvePlacement(placement));
}

/**
 * Creates (or takes over) the VM's cgroup and sets its CPU and memory limits from the VM's size.
 * A cgroup this call created is removed again if a limit cannot be set.
 */
export async function createVmCgroup(spec: VmCgroupSpec, placement: PlacementInput = {}): Promise<VmCgroup> {
  validateName(spec.name);
  const resolved = await ensureParentCgroup(placement);
  const settings = vmCgroupSettings(resolved.layout.version, spec);
  const cgroup = new VmCgroupHandle(spec.name, resolved);
  const created: string[] = [];
  try {
    for (const dir of distinct(cgroup.dirs)) if (await mkdirCgroup(dir)) created.push(dir);
    await applySettings(cgroup, settings);
  } catch (error) {
    for (const dir of created.reverse()) await rmdir(dir).catch(() => {});
    throw error;
  }
  return cgroup;
}

async function applySettings(cgroup: VmCgroup, settings: readonly CgroupSetting[]): Promise<void> {
  let ordered = [...settings];
  if (cgroup.version === 1) {
    // memory.memsw.limit_in_bytes may never be below memory.limit_in_bytes: when an existing
    // cgroup's limit goes up, raise memsw first (cgroup-v1/memory.rst, 2.4 "swap extension").
    const limitFile = join(cgroup.dirs.memory, 'memory.limit_in_bytes');
    const limit = settings.find((s) => s.file === 'memory.limit_in_bytes');
    const memsw = settings.find((s) => s.file === 'memory.memsw.limit_in_bytes');
    if (limit && memsw && Number(limit.value) > Number(await readCgroupFile(limitFile))) {
      ordered = [...settings.filter((s) => s !== limit && s !== memsw), memsw, limit];
    }
  }
  for (const setting of ordered) {
    const file = join(cgroup.dirs[setting.controller], setting.file);
    if (setting.optional && !(await exists(file))) continue;
    await writeCgroupFile(file, setting.value);
  }
}

/** Creates the VM's cgroup with its limits and moves `pid` into it; on failure nothing is left. */
export async function placeInCgroup(pid: number, spec: VmCgroupSpec, placement: PlacementInput = {}): Promise<VmCgroup> {
  const cgroup = await createVmCgroup(spec, placement);
  try {
    await cgroup.addProcess(pid);
  } catch (error) {
    await cgroup.remove({ timeoutMs: 500 }).catch(() => {});
    throw error;
  }
  return cgroup;
}

/** Names of the VM cgroups under the placement's parent (in any hierarchy), for orphan cleanup. */
export async function listVmCgroups(placement: PlacementInput = {}): Promise<string[]> {
  const resolved = await resolvePlacement(placement);
  const names = new Set<string>();
  for (const dir of distinct(resolved.parentDirs)) {
    try {
      for (const entry of await readdir(dir, { withFileTypes: true })) if (entry.isDirectory()) names.add(entry.name);
    } catch (error) {
      if (errnoOf(error) !== 'ENOENT') throw new CgroupError(`cannot list ${dir}: ${errorText(error)}`, dir, undefined, errnoOf(error));
    }
  }
  return [...names].sort();
}

/** Removes VM cgroup `name` (already gone is fine). */
export async function removeVmCgroup(name: string, placement: PlacementInput = {}, options?: RemoveOptions): Promise<void> {
  await (await openVmCgroup(name, placement)).remove(options);
}
