// HypervisorDriver for Firecracker (>= 1.8): one detached VMM per VM, configured through its API
// socket (docs/getting-started.md), stopped with SendCtrlAltDel and SIGKILL after a grace period.
// Every VMM is held to the VM's size by a cgroup of its own (src/host/cgroups); with `jailerBin`
// it also runs through Firecracker's jailer (docs/jailer.md): chroot, a uid/gid of its own, the
// cgroup set up by the jailer itself (README.md, "Jailer"). The phases live in their own files:
// setup.ts (configuration), prepare.ts and launch.ts, the API client (api-client.ts), stop.ts,
// reclaim.ts. The other exports are for tools and tests.
import pino from 'pino';
import { isProcessAlive } from '../../host/process.ts';
import type { HypervisorDriver } from '../../vms/ports.ts';
import { DEFAULT_JAIL_UID_BASE, jailIdsForVm } from './jail.ts';
import { startVm } from './launch.ts';
import { driverContext, type FirecrackerDriverOptions } from './options.ts';
import { reclaimOrphans } from './reclaim.ts';
import { firecrackerSnapshots } from './snapshot.ts';
import { stopVm } from './stop.ts';
import { iprouteTemplateTaps } from './template-tap.ts';

export { DEFAULT_CGROUP_OVERHEAD_MB, FirecrackerStartError, type FirecrackerDriverOptions, type JailSettings } from './options.ts';
export { FirecrackerApiClient, FirecrackerApiError, socketAnswers, type ApiMethod, type ApiResponse } from './api-client.ts';
export {
  API_SOCKET_NAME,
  buildVmmCommand,
  DEFAULT_CHROOT_BASE_DIR,
  firecrackerInstanceId,
  MAX_SOCKET_PATH_BYTES,
  type JailerOptions,
  type JailLayout,
  type VmmCommand,
  type VmmCommandInput,
} from './command.ts';
export {
  DEFAULT_JAIL_UID_BASE,
  JAIL_CACHE_DIR,
  JAIL_FILES,
  jailedSpec,
  jailIdsForVm,
  processesOfUid,
  removeJail,
  removeJailsOf,
  resolveExecutable,
  type JailIds,
} from './jail.ts';
export { stageJail, type StagedJail } from './jail-stage.ts';
export { BOOT_ARGS_PREFIX, bootCalls, buildBootArgs, type BootCall } from './boot-requests.ts';
export { IDENTITY_VSOCK_PORT, JAIL_SNAPSHOT_FILES, MIN_RESTORE_VERSION, NEEDS_JAILER, TEMPLATE_VSOCK, versionRefusal } from './snapshot.ts';
export { iprouteTemplateTaps, TEMPLATE_TAP_PATTERN, templateTapName, type TemplateTaps } from './template-tap.ts';
export type * from './api-types.ts';

/**
 * Creates the Firecracker driver. Nothing is checked up front (the binary, KVM and cgroups are
 * looked at per start); it resolves as a promise so that both drivers are made the same way.
 */
export function createFirecrackerDriver(opts: FirecrackerDriverOptions): Promise<HypervisorDriver> {
  const ctx = driverContext(opts, pino({ level: 'silent' }));
  return Promise.resolve({
    info: { name: 'firecracker', acceleration: 'kvm' },
    start: (spec) => startVm(ctx, spec),
    isAlive: (proc) => isProcessAlive(proc),
    stop: (spec, proc, gracefulMs) => stopVm(ctx, spec, proc, gracefulMs),
    reclaim: (keep) => reclaimOrphans(ctx, keep),
    // Jailed VMMs run as the VM's own uid/gid: its TAP is given to them.
    vmmOwner: async (spec) => (opts.jailerBin ? jailIdsForVm(spec.mac, opts.jail?.uidBase ?? DEFAULT_JAIL_UID_BASE) : undefined),
    // Snapshot start needs the jailer; without it save and restore refuse, saying so (snapshot.ts).
    snapshots: firecrackerSnapshots(ctx, opts.templateTaps ?? iprouteTemplateTaps(opts.jail?.netns)),
  });
}
