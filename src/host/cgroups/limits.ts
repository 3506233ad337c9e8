// Pure: the cgroup files and values that hold one VM to its size. CPU: `vcpus` full CPUs per
// CFS period (v2 cpu.max "<quota> <period>", v1 cpu.cfs_quota_us / cpu.cfs_period_us). Memory:
// the guest's memory plus an allowance for the VMM itself (v2 memory.max, v1
// memory.limit_in_bytes), and no swap beyond it (v2 memory.swap.max 0, v1
// memory.memsw.limit_in_bytes = the same limit), the swap files only where the kernel has them.
import type { CgroupVersion, VmController } from './detect.ts';

/** CFS period (µs) of every VM cgroup: the kernel's default, 100 ms. */
export const CPU_PERIOD_US = 100_000;

export interface VmLimits {
  /** Whole CPUs the VM may use; normally its vCPU count. */
  readonly vcpus: number;
  /** The guest's memory (MiB). */
  readonly memoryMb: number;
  /** Allowance for the VMM process on top of the guest's memory (MiB): code, page tables, I/O buffers. */
  readonly overheadMb?: number;
}

export interface CgroupSetting {
  readonly controller: VmController;
  /** File name in the VM's cgroup directory, e.g. `memory.max`. */
  readonly file: string;
  readonly value: string;
  /** Written only where the file exists (swap accounting can be compiled or booted out). */
  readonly optional: boolean;
}

const MIB = 1024 * 1024;

export function validateLimits(limits: VmLimits): void {
  const { vcpus, memoryMb, overheadMb = 0 } = limits;
  if (!Number.isInteger(vcpus) || vcpus < 1 || vcpus > 4096) throw new RangeError(`vcpus must be an integer in 1..4096, got ${vcpus}`);
  if (!Number.isInteger(memoryMb) || memoryMb < 1) throw new RangeError(`memoryMb must be a positive integer, got ${memoryMb}`);
  if (!Number.isInteger(overheadMb) || overheadMb < 0) throw new RangeError(`overheadMb must be a non-negative integer, got ${overheadMb}`);
}

/** Bytes the VM's cgroup may use: (memoryMb + overheadMb) MiB. */
export function memoryLimitBytes(limits: VmLimits): number {
  return (limits.memoryMb + (limits.overheadMb ?? 0)) * MIB;
}

/**
 * The settings of a VM's cgroup in the order they must be written on a fresh cgroup (v1: the
 * period before the quota, memory.limit_in_bytes before memsw, which may not be below it).
 */
export function vmCgroupSettings(version: CgroupVersion, limits: VmLimits): CgroupSetting[] {
  validateLimits(limits);
  const quota = String(limits.vcpus * CPU_PERIOD_US);
  const memory = String(memoryLimitBytes(limits));
  if (version === 2) {
    return [
      { controller: 'cpu', file: 'cpu.max', value: `${quota} ${CPU_PERIOD_US}`, optional: false },
      { controller: 'memory', file: 'memory.max', value: memory, optional: false },
      { controller: 'memory', file: 'memory.swap.max', value: '0', optional: true },
    ];
  }
  return [
    { controller: 'cpu', file: 'cpu.cfs_period_us', value: String(CPU_PERIOD_US), optional: false },
    { controller: 'cpu', file: 'cpu.cfs_quota_us', value: quota, optional: false },
    { controller: 'memory', file: 'memory.limit_in_bytes', value: memory, optional: false },
    { controller: 'memory', file: 'memory.memsw.limit_in_bytes', value: memory, optional: true },
  ];
}
