// The QEMU driver's options, its start error, and the context its phases share.
import type { Logger } from 'pino';
import type { PlacementInput } from '../../host/cgroups/index.ts';
import type { AccelVerdict } from './accel.ts';
import { qemuOverheadMb, type Acceleration } from './args.ts';

export interface QemuDriverOptions {
  /** Default `qemu-system-x86_64` from PATH. */
  readonly qemuBin?: string;
  /** Holds the kernel used for the KVM trial boot. */
  readonly imagesDir: string;
  /** Where the acceleration verdict is cached. */
  readonly stateDir: string;
  readonly log?: Logger;
  /** `auto` (default) tries KVM; `kvm`/`tcg` force one (tests, operators who know). */
  readonly accel?: 'auto' | Acceleration;
  /** Budget of the KVM trial boot (default 15 s). */
  readonly kvmTrialTimeoutMs?: number;
  /** How long start() waits for QEMU to come up and QMP to report `running` (default 30 s). */
  readonly startTimeoutMs?: number;
  /**
   * Command prefix QEMU is started through, e.g. `['ip', 'netns', 'exec', 'ns1']` (tests put the
   * VM's TAP in a private network namespace). It must exec QEMU, not fork it.
   */
  readonly launchPrefix?: readonly string[];
  /**
   * Run each VM's QEMU as its own unprivileged user (`ctvm-<tap>`) under a seccomp sandbox.
   * Default: when the agent runs as root.
   */
  readonly perVmUser?: boolean;
  /**
   * Where each VM's QEMU gets its cgroup (CPU = vcpus, memory = memory_mb + overhead); `false`:
   * no limits. QEMU starts paused and is resumed only once it sits in its cgroup.
   */
  readonly cgroup?: PlacementInput | false;
  /** Memory QEMU itself may use beyond the guest's (default: qemuOverheadMb of the accelerator). */
  readonly cgroupOverheadMb?: number;
}

export class QemuStartError extends Error {
  constructor(vmId: string, reason: string) {
    super(`qemu could not start VM ${vmId}: ${reason}`);
    this.name = 'QemuStartError';
  }
}

/** What every phase of the driver works with: the options with their defaults applied. */
export interface QemuContext {
  readonly verdict: AccelVerdict;
  readonly qemuBin: string;
  readonly log: Logger;
  readonly startTimeoutMs: number;
  readonly launchPrefix: readonly string[];
  readonly perVmUser: boolean;
  readonly cgroup: PlacementInput | false;
  readonly cgroupOverheadMb: number;
}

export function qemuContext(verdict: AccelVerdict, opts: QemuDriverOptions, silent: Logger): QemuContext {
  return {
    verdict,
    qemuBin: opts.qemuBin ?? 'qemu-system-x86_64',
    log: opts.log ?? silent,
    startTimeoutMs: opts.startTimeoutMs ?? 30_000,
    launchPrefix: opts.launchPrefix ?? [],
    perVmUser: opts.perVmUser ?? process.getuid?.() === 0,
    cgroup: opts.cgroup ?? {},
    cgroupOverheadMb: opts.cgroupOverheadMb ?? qemuOverheadMb(verdict.accel),
  };
}
