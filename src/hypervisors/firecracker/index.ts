// Firecracker hypervisor driver: see driver.ts and README.md. The rest is exported for tools and tests.
export {
  createFirecrackerDriver,
  DEFAULT_CGROUP_OVERHEAD_MB,
  FirecrackerStartError,
  type FirecrackerDriverOptions,
  type JailSettings,
} from './driver.ts';
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
export type * from './api-types.ts';
