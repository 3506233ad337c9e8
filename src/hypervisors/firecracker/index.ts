// Firecracker hypervisor driver: see driver.ts. The rest is exported for tools and tests.
export { createFirecrackerDriver, FirecrackerStartError, type FirecrackerDriverOptions } from './driver.ts';
export { FirecrackerApiClient, FirecrackerApiError, socketAnswers, type ApiMethod, type ApiResponse } from './api-client.ts';
export {
  API_SOCKET_NAME,
  buildVmmCommand,
  firecrackerInstanceId,
  type JailerOptions,
  type JailLayout,
  type VmmCommand,
  type VmmCommandInput,
} from './command.ts';
export { BOOT_ARGS_PREFIX, bootCalls, buildBootArgs, type BootCall } from './boot-requests.ts';
export type * from './api-types.ts';
