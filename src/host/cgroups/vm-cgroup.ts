// One cgroup per VM: `<hierarchy>/<parent>/<name>` (default parent `clarateach`), holding the VMM
// process, its CPU quota and its memory limit. With cgroup v2 that is one directory in the unified
// hierarchy, with the cpu and memory controllers enabled (cgroup.subtree_control) in every
// ancestor; with v1 it is the same relative path in the cpu hierarchy and in the memory one.
// Kernel interfaces: Documentation/admin-guide/cgroup-v2.rst, cgroup-v1/{cgroups,memory}.rst and
// scheduler/sched-bwc.rst. Where the parent is and how it is made: placement.ts.
import { readdir, readFile, rmdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { exists } from '../../shared/files.ts';
import { distinct, mkdirCgroup, readCgroupFile, writeCgroupFile } from './cgroup-files.ts';
import type { CgroupVersion, VmController } from './detect.ts';
import { CgroupError, errnoOf, errorText } from './errors.ts';
import { vmCgroupSettings, type CgroupSetting, type VmLimits } from './limits.ts';
import { ensureParentCgroup, resolvePlacement, type PlacementInput, type ResolvedPlacement } from './placement.ts';

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
