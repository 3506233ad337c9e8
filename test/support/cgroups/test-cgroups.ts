// Test helpers for real cgroups: where tests may create VM cgroups without disturbing whatever
// runs this test (on cgroup v1, below the test process's own cgroup, so the processes a test puts
// in them stay inside the limits the test runner itself is under), and a cleanup that removes
// every cgroup and directory a test created, killing what is left in them, even after a failure.
import { existsSync } from 'node:fs';
import { readdir, readFile, rmdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  cgroupPathsOf,
  detectCgroupLayout,
  readProcessCgroups,
  VM_CONTROLLERS,
  type CgroupLayout,
} from '../../../src/host/cgroups/detect.ts';
import { resolvePlacement, type CgroupPlacement } from '../../../src/host/cgroups/placement.ts';

/** Why real-cgroup tests cannot run here, or undefined when they can. */
export async function realCgroupSkipReason(): Promise<string | undefined> {
  if (process.getuid?.() !== 0) return 'needs root (creates cgroups)';
  try {
    await detectCgroupLayout();
    return undefined;
  } catch (error) {
    return `no usable cgroup hierarchy: ${(error as Error).message}`;
  }
}

export interface TestCgroupArea {
  readonly layout: CgroupLayout;
  readonly placement: CgroupPlacement;
  /** The parent as a path relative to each hierarchy's root (what the jailer's --parent-cgroup takes). */
  readonly rootRelativeParent: string;
  /** Kills what is left in the area's cgroups, removes them and every directory the area added. */
  cleanup(): Promise<void>;
}

async function killAndRemoveTree(dir: string): Promise<void> {
  let entries: string[] = [];
  try {
    entries = (await readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
  } catch {
    return;
  }
  for (const child of entries) await killAndRemoveTree(join(dir, child));
  const deadline = Date.now() + 5_000;
  for (;;) {
    try {
      const pids = (await readFile(join(dir, 'cgroup.procs'), 'utf8')).split('\n').filter(Boolean).map(Number);
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      await rmdir(dir);
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      if (Date.now() > deadline) throw error;
      await sleep(50);
    }
  }
}

/**
 * A parent cgroup for one test file, `ct-test-<tag>-<pid>`. cgroup v1: below this process's own
 * cgroup, and chosen so that one root-relative path (for the jailer) is below it in every
 * hierarchy. cgroup v2 (no processes allowed in a cgroup whose children have controllers):
 * directly below the root, like the agent's own `clarateach`.
 */
export async function testCgroupArea(tag: string): Promise<TestCgroupArea> {
  const layout = await detectCgroupLayout();
  const name = `ct-test-${tag}-${process.pid}`;
  let parent = name;
  if (layout.version === 1) {
    const own = cgroupPathsOf(await readProcessCgroups('self'), layout);
    // The deepest own cgroup; the others must be its ancestors (typically "/").
    const paths = VM_CONTROLLERS.map((c) => own[c] ?? '/');
    const deepest = paths.reduce((a, b) => (b.length > a.length ? b : a));
    for (const path of paths) {
      if (!(deepest === path || deepest.startsWith(path === '/' ? '/' : `${path}/`))) {
        throw new Error(`this process's cgroups (${paths.join(', ')}) have no common subtree for a test parent`);
      }
    }
    parent = `${deepest.replace(/^\/+/, '')}/${name}`.replace(/^\//, '');
  }
  const placement: CgroupPlacement = { layout, parent, relativeTo: 'root' };
  const resolved = await resolvePlacement(placement);
  // Remember which ancestors of the parent exist already: cleanup removes only the others (and
  // only when empty: a test running in parallel may use them too).
  const parents = [...new Set(VM_CONTROLLERS.map((c) => resolved.parentDirs[c]))];
  const ancestors: string[] = [];
  for (const controller of VM_CONTROLLERS) {
    const mount = layout.mounts[controller];
    let dir = mount;
    for (const part of relative(mount, resolved.parentDirs[controller]).split('/').slice(0, -1)) {
      dir = join(dir, part);
      if (!existsSync(dir) && !ancestors.includes(dir)) ancestors.push(dir);
    }
  }
  return {
    layout,
    placement,
    rootRelativeParent: parent,
    async cleanup() {
      for (const dir of parents) await killAndRemoveTree(dir);
      for (const dir of [...ancestors].sort((a, b) => b.length - a.length)) await rmdir(dir).catch(() => {});
    },
  };
}
