// HypervisorDriver for QEMU: one `qemu-system-x86_64 -M microvm` per VM, daemonized so that it
// outlives the agent, controlled over QMP on a unix socket in the VM's run directory. The phases
// live in their own files: args.ts (configuration), launch.ts, qmp.ts (control), stop.ts,
// reclaim.ts; accel.ts decides KVM or TCG once.
import pino from 'pino';
import { isProcessAlive } from '../../host/process.ts';
import { ensureVmUser, vmUserName } from '../../host/vm-users.ts';
import { imagePaths } from '../../image/layout.ts';
import type { HypervisorDriver, VmLaunchSpec } from '../../vms/ports.ts';
import { detectAcceleration, hostTscKhz, type AccelVerdict } from './accel.ts';
import { qemuCommand, startVm } from './launch.ts';
import { qemuContext, type QemuDriverOptions } from './options.ts';
import { reclaimOrphans } from './reclaim.ts';
import { qemuSnapshots } from './snapshot.ts';
import { stopVm } from './stop.ts';

export { buildQemuArgs, kernelCommandLine } from './args.ts';
export type { AccelVerdict } from './accel.ts';
export { QemuStartError, type QemuDriverOptions } from './options.ts';

export interface QemuDriver extends HypervisorDriver {
  readonly verdict: AccelVerdict;
  /** The full command (launch prefix included) that start() runs for `spec`. */
  command(spec: VmLaunchSpec, runAs?: string): { file: string; args: string[] };
}

/** The driver for an acceleration already decided (e.g. by createQemuDriver, or forced in tests). */
export function qemuDriverWithVerdict(verdict: AccelVerdict, opts: QemuDriverOptions): QemuDriver {
  const ctx = qemuContext(verdict, opts, pino({ level: 'silent' }));
  return {
    info: { name: 'qemu', acceleration: verdict.accel },
    verdict,
    command: (spec, runAs) => qemuCommand(ctx, spec, runAs),
    start: (spec) => startVm(ctx, spec),
    isAlive: (proc) => isProcessAlive(proc),
    stop: (spec, proc, gracefulMs) => stopVm(ctx, spec, proc, gracefulMs),
    reclaim: (keep) => reclaimOrphans(ctx, keep),
    snapshots: qemuSnapshots(ctx),
    // The user this VM's QEMU runs as (its TAP is given to it), when VMs run as users of their own.
    vmmOwner: async (spec) => {
      if (!ctx.perVmUser || spec.tapName === '') return undefined;
      const user = await ensureVmUser(vmUserName(spec.tapName));
      return { uid: user.uid, gid: user.gid };
    },
  };
}

/**
 * Creates the QEMU driver. Decides the acceleration once: KVM only if /dev/kvm opens and a trial
 * boot of the images' kernel under KVM reaches its kernel panic in time (verdict cached in
 * stateDir); otherwise TCG.
 */
export async function createQemuDriver(opts: QemuDriverOptions): Promise<QemuDriver> {
  const log = opts.log ?? pino({ level: 'silent' });
  const qemuBin = opts.qemuBin ?? 'qemu-system-x86_64';
  const verdict = await decideAcceleration(opts, qemuBin);
  const tsc = verdict.accel === 'tcg' && verdict.tscKhz ? `, tsc_early_khz=${verdict.tscKhz}` : '';
  log.info({ acceleration: verdict.accel, reason: verdict.reason }, `qemu: acceleration ${verdict.accel} (${verdict.reason})${tsc}`);
  return qemuDriverWithVerdict(verdict, { ...opts, qemuBin });
}

async function decideAcceleration(opts: QemuDriverOptions, qemuBin: string): Promise<AccelVerdict> {
  if (opts.accel === 'kvm' || opts.accel === 'tcg') {
    const tscKhz = opts.accel === 'tcg' ? await hostTscKhz() : undefined;
    return {
      accel: opts.accel,
      reason: 'forced by configuration',
      key: '',
      checkedAt: new Date().toISOString(),
      ...(tscKhz === undefined ? {} : { tscKhz }),
    };
  }
  return detectAcceleration({
    qemuBin,
    kernelPath: imagePaths(opts.imagesDir).kernel,
    stateDir: opts.stateDir,
    ...(opts.log ? { log: opts.log } : {}),
    ...(opts.kvmTrialTimeoutMs === undefined ? {} : { trialTimeoutMs: opts.kvmTrialTimeoutMs }),
  });
}
