// The Firecracker driver's options, its start error, and the context its phases share.
import type { Logger } from 'pino';
import { ensureParentCgroup, resolvePlacement, type CgroupPlacement, type ResolvedPlacement } from '../../host/cgroups/index.ts';
import type { JailerOptions } from './command.ts';
import type { TemplateTaps } from './template-tap.ts';

/** Memory (MiB) a VM's cgroup allows on top of the guest's memory: Firecracker's own needs. */
export const DEFAULT_CGROUP_OVERHEAD_MB = 64;

export interface JailSettings {
  /** `--chroot-base-dir`; default /srv/jailer. Same filesystem as IMAGES_DIR and STATE_DIR: files are hard-linked. */
  readonly chrootBaseDir?: string;
  /** First uid/gid of the per-VM range (jail.ts); default 2_000_000_000. */
  readonly uidBase?: number;
  /** `--netns`: network namespace handle the VMM joins (its TAP must be in that namespace). */
  readonly netns?: string;
  /** `--new-pid-ns`: the VMM runs as pid 1 of a pid namespace of its own. */
  readonly newPidNs?: boolean;
  /** `--resource-limit`s; the jailer's default is no-file=2048. */
  readonly resourceLimits?: JailerOptions['resourceLimits'];
}

export interface FirecrackerDriverOptions {
  /** The firecracker binary: a name looked up on PATH or an absolute path. */
  readonly firecrackerBin: string;
  readonly log?: Logger;
  /** How long Firecracker may take to create its API socket; default 5 s. */
  readonly apiSocketTimeoutMs?: number;
  /** Timeout of each configuration request; default 10 s (InstanceStart gets 3x). */
  readonly requestTimeoutMs?: number;
  /**
   * Firecracker's `jailer` (JAILER_BIN): when set, every VMM starts through it, chrooted, as a
   * uid/gid of its own, in its cgroup. Unset: firecracker runs directly (as the agent's user).
   */
  readonly jailerBin?: string;
  readonly jail?: JailSettings;
  /**
   * Where the VMs' cgroups go: default the detected hierarchy (v1 or v2), `clarateach/<id>` from
   * its root. `false` turns the CPU and memory limits off (not recommended).
   */
  readonly cgroup?: CgroupPlacement | false;
  /** MiB on top of the guest's memory the cgroup allows the VMM; default 64. */
  readonly cgroupOverheadMb?: number;
  /** How a snapshot template's unconnected TAP is made and removed; default iproute2 (in `jail.netns`). */
  readonly templateTaps?: TemplateTaps;
}

/** start() failed; nothing is left running. `faultMessage` is Firecracker's own reason, if any. */
export class FirecrackerStartError extends Error {
  constructor(
    message: string,
    readonly faultMessage: string | undefined,
  ) {
    super(message);
    this.name = 'FirecrackerStartError';
  }
}

/** What every phase of the driver works with: the options with their defaults applied. */
export interface DriverContext {
  readonly opts: FirecrackerDriverOptions;
  readonly log: Logger;
  readonly socketTimeoutMs: number;
  readonly requestTimeoutMs: number;
  readonly jail: JailSettings;
  readonly overheadMb: number;
  /** Where VM cgroups go (detected once); `prepare` (start) also creates the parent cgroup. */
  placement(prepare: boolean): Promise<ResolvedPlacement | undefined>;
}

export function driverContext(opts: FirecrackerDriverOptions, silent: Logger): DriverContext {
  let resolved: ResolvedPlacement | undefined;
  return {
    opts,
    log: opts.log ?? silent,
    socketTimeoutMs: opts.apiSocketTimeoutMs ?? 5_000,
    requestTimeoutMs: opts.requestTimeoutMs ?? 10_000,
    jail: opts.jail ?? {},
    overheadMb: opts.cgroupOverheadMb ?? DEFAULT_CGROUP_OVERHEAD_MB,
    async placement(prepare) {
      if (opts.cgroup === false) return undefined;
      resolved ??= await resolvePlacement(opts.cgroup ?? {});
      return prepare ? ensureParentCgroup(resolved) : resolved;
    },
  };
}

export function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
