// Where VM cgroups go: the parent cgroup (default `clarateach`) in each hierarchy, worked out from
// the detected layout, and made with its controllers enabled (v2) before a VM cgroup goes in it.
import { mkdir, readFile } from 'node:fs/promises';
import { isAbsolute, join, relative } from 'node:path';
import { exists } from '../../shared/files.ts';
import { distinct, mkdirCgroup, readCgroupFile, writeCgroupFile } from './cgroup-files.ts';
import {
  cgroupPathsOf,
  detectCgroupLayout,
  readProcessCgroups,
  VM_CONTROLLERS,
  type CgroupLayout,
  type DetectOptions,
  type VmController,
} from './detect.ts';
import { CgroupError, errnoOf, errorText } from './errors.ts';
import type { CgroupSetting } from './limits.ts';

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
  /**
   * The VMs' share, as a whole, of a contended CPU against the parent's siblings, in cgroup v2's
   * cpu.weight units (1-10000; the kernel's default is 100), written on the parent cgroup (v1:
   * cpu.shares, weight × 1024 / 100). Unset: left as it is.
   */
  readonly cpuWeight?: number;
}

/** A placement with its directories worked out. */
export interface ResolvedPlacement {
  readonly layout: CgroupLayout;
  readonly parent: string;
  readonly relativeTo: 'root' | 'self';
  readonly cpuWeight?: number;
  /** Absolute directory of the parent cgroup in each controller's hierarchy. */
  readonly parentDirs: Readonly<Record<VmController, string>>;
}

export type PlacementInput = CgroupPlacement | ResolvedPlacement;

function validateRelativePath(path: string, what: string): void {
  const parts = path.split('/');
  if (path === '' || isAbsolute(path) || parts.some((p) => p === '' || p === '.' || p === '..' || /[\0\n]/.test(p))) {
    throw new CgroupError(`${what} must be a relative path without empty, "." or ".." components, got "${path}"`, path);
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
  const { cpuWeight } = placement;
  if (cpuWeight !== undefined && !(Number.isInteger(cpuWeight) && cpuWeight >= 1 && cpuWeight <= 10_000)) {
    throw new CgroupError(`the VMs' CPU weight must be an integer in 1..10000, got ${cpuWeight}`, parent);
  }
  return {
    layout,
    parent,
    relativeTo,
    parentDirs: { cpu: join(bases.cpu, parent), memory: join(bases.memory, parent) },
    ...(cpuWeight === undefined ? {} : { cpuWeight }),
  };
}

/** The placement's CPU weight on its parent cgroup: v2 cpu.weight, v1 cpu.shares (1024 is v1's 100). */
async function writeCpuWeight(resolved: ResolvedPlacement): Promise<void> {
  if (resolved.cpuWeight === undefined) return;
  const [file, value] =
    resolved.layout.version === 2
      ? ['cpu.weight', resolved.cpuWeight]
      : ['cpu.shares', Math.max(2, Math.round((resolved.cpuWeight * 1024) / 100))];
  await writeCgroupFile(join(resolved.parentDirs.cpu, file), String(value));
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
 * memory for the children of every level from the hierarchy's root down to the parent. Writes the
 * VMs' CPU weight on the parent when the placement has one.
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
    await writeCpuWeight(resolved);
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
  await writeCpuWeight(resolved);
  return resolved;
}

/** True when the kernel offers this setting's file (checked in the parent cgroup). */
export async function isSettingSupported(placement: ResolvedPlacement, setting: CgroupSetting): Promise<boolean> {
  return !setting.optional || (await exists(join(placement.parentDirs[setting.controller], setting.file)));
}
