// A fake cgroup v2 tree in a temporary directory, for tests of the v2 logic on hosts that run
// cgroup v1 (or tests that must not touch the real tree). Plain files stand in for the kernel's
// interface files, so writes can be read back. What the kernel would do by itself is explicit:
// `kernelMkdir` populates a new cgroup directory with its interface files, `kernelEmpty` removes
// them again (a real cgroup directory holds only virtual files, so rmdir works on it).
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CgroupLayout } from '../../../src/host/cgroups/detect.ts';

export interface FakeCgroupV2 {
  /** The fake unified mount point. */
  readonly root: string;
  readonly layout: CgroupLayout;
  /** A /proc/self/mountinfo describing the fake mount (for detectCgroupLayout). */
  readonly mountinfoPath: string;
  /** A /proc/mounts describing the fake mount (what the jailer parses). */
  readonly procMountsPath: string;
  /** Creates `dir` with the interface files the kernel would create in it (a snapshot of the parent's state). */
  kernelMkdir(dir: string): void;
  /** Removes the interface files of `dir`, so that rmdir works on it as on the real thing. */
  kernelEmpty(dir: string): void;
  read(path: string): string | undefined;
}

export interface FakeCgroupV2Options {
  /** Controllers the root offers (cgroup.controllers); default cpuset cpu io memory pids. */
  readonly controllers?: string;
  /** What the root's cgroup.subtree_control holds at first; default empty. */
  readonly subtreeControl?: string;
  /** Whether the kernel has swap accounting (memory.swap.max in non-root cgroups); default true. */
  readonly swap?: boolean;
}

const INTERFACE_FILES = [
  'cgroup.procs',
  'cgroup.controllers',
  'cgroup.subtree_control',
  'cgroup.events',
  'cpu.max',
  'cpu.stat',
  'memory.max',
  'memory.current',
  'memory.swap.max',
];

export function createFakeCgroupV2(dir: string, options: FakeCgroupV2Options = {}): FakeCgroupV2 {
  const root = join(dir, 'sys', 'fs', 'cgroup');
  mkdirSync(root, { recursive: true });
  const controllers = options.controllers ?? 'cpuset cpu io memory pids';
  const swap = options.swap ?? true;
  writeFileSync(join(root, 'cgroup.controllers'), `${controllers}\n`);
  writeFileSync(join(root, 'cgroup.subtree_control'), options.subtreeControl ?? '');
  writeFileSync(join(root, 'cgroup.procs'), '1\n');
  const mountinfoPath = join(dir, 'mountinfo');
  writeFileSync(mountinfoPath, `30 23 0:26 / ${root} rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n`);
  const procMountsPath = join(dir, 'mounts');
  writeFileSync(procMountsPath, `cgroup2 ${root} cgroup2 rw,nosuid,nodev,noexec,relatime,nsdelegate 0 0\n`);
  return {
    root,
    layout: { version: 2, mounts: { cpu: root, memory: root } },
    mountinfoPath,
    procMountsPath,
    kernelMkdir(path) {
      mkdirSync(path, { recursive: true });
      writeFileSync(join(path, 'cgroup.procs'), '');
      // A child offers what its parent enabled for its children.
      const parentEnabled = existsSync(join(path, '..', 'cgroup.subtree_control'))
        ? readFileSync(join(path, '..', 'cgroup.subtree_control'), 'utf8')
            .split(/\s+/)
            .filter(Boolean)
            .map((c) => c.replace(/^\+/, ''))
        : [];
      writeFileSync(join(path, 'cgroup.controllers'), `${parentEnabled.join(' ')}\n`);
      writeFileSync(join(path, 'cgroup.subtree_control'), '');
      writeFileSync(join(path, 'cgroup.events'), 'populated 0\nfrozen 0\n');
      writeFileSync(join(path, 'cpu.max'), 'max 100000\n');
      writeFileSync(join(path, 'memory.max'), 'max\n');
      if (swap) writeFileSync(join(path, 'memory.swap.max'), 'max\n');
    },
    kernelEmpty(path) {
      if (!existsSync(path)) return;
      for (const name of readdirSync(path)) {
        if (INTERFACE_FILES.includes(name) || /^[a-z]+\.[a-z_.]+$/.test(name)) rmSync(join(path, name), { force: true });
      }
    },
    read(path) {
      return existsSync(path) ? readFileSync(path, 'utf8') : undefined;
    },
  };
}
