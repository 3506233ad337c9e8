// The API calls that configure and boot one VM, in order, as plain data (docs/getting-started.md:
// machine config, boot source, drives, network, then InstanceStart). Pure; the driver sends them.
import type { VmLaunchSpec } from '../../vms/ports.ts';
import type { FirecrackerApiClient, RequestOptions } from './api-client.ts';
import type { BootSource, Drive, InstanceActionInfo, MachineConfiguration, NetworkInterface, Vsock } from './api-types.ts';

/**
 * Always on the guest command line: serial console on ttyS0 (Firecracker copies it to its stdout),
 * reboot through the keyboard controller (Firecracker exits on the guest's reset, which is how
 * SendCtrlAltDel and `reboot` end the VMM), reboot on panic, no PCI probing.
 */
// A guest that powers off leaves Firecracker running (Firecracker FAQ); one that reboots makes it
// exit. So the guest init is told to finish with a reboot (clarateach.halt=reboot).
export const BOOT_ARGS_PREFIX = 'console=ttyS0 reboot=k panic=1 pci=off clarateach.halt=reboot';

/** Drive ids (path ids must be alphanumerics and `_`): base first, so it is the guest's vda. */
export const BASE_DRIVE_ID = 'base';
export const LAYER_DRIVE_ID = 'layer';
export const NET_IFACE_ID = 'eth0';

export function buildBootArgs(kernelArgs: string): string {
  return `${BOOT_ARGS_PREFIX} ${kernelArgs}`.trim();
}

export type BootCall =
  | { readonly operationId: 'putMachineConfiguration'; readonly method: 'PUT'; readonly path: string; readonly body: MachineConfiguration }
  | { readonly operationId: 'putGuestBootSource'; readonly method: 'PUT'; readonly path: string; readonly body: BootSource }
  | { readonly operationId: 'putGuestDriveByID'; readonly method: 'PUT'; readonly path: string; readonly body: Drive }
  | { readonly operationId: 'putGuestNetworkInterfaceByID'; readonly method: 'PUT'; readonly path: string; readonly body: NetworkInterface }
  | { readonly operationId: 'putGuestVsock'; readonly method: 'PUT'; readonly path: string; readonly body: Vsock }
  | { readonly operationId: 'createSyncAction'; readonly method: 'PUT'; readonly path: string; readonly body: InstanceActionInfo };

/**
 * Every request start() sends, in order; the last one is InstanceStart. `vsock` adds the device a
 * snapshot template talks to the agent through (snapshot.ts).
 */
export function bootCalls(spec: VmLaunchSpec, vsock?: Vsock): readonly BootCall[] {
  const machine: MachineConfiguration = { vcpu_count: spec.vcpus, mem_size_mib: spec.memoryMb };
  const boot: BootSource = {
    kernel_image_path: spec.kernelPath,
    initrd_path: spec.initrdPath,
    boot_args: buildBootArgs(spec.kernelArgs),
  };
  const base: Drive = {
    drive_id: BASE_DRIVE_ID,
    path_on_host: spec.baseDiskPath,
    is_root_device: false,
    is_read_only: true,
  };
  const layer: Drive = {
    drive_id: LAYER_DRIVE_ID,
    path_on_host: spec.layerDiskPath,
    is_root_device: false,
    is_read_only: false,
  };
  const net: NetworkInterface = { iface_id: NET_IFACE_ID, host_dev_name: spec.tapName, guest_mac: spec.mac };
  const start: InstanceActionInfo = { action_type: 'InstanceStart' };
  return [
    { operationId: 'putMachineConfiguration', method: 'PUT', path: '/machine-config', body: machine },
    { operationId: 'putGuestBootSource', method: 'PUT', path: '/boot-source', body: boot },
    { operationId: 'putGuestDriveByID', method: 'PUT', path: `/drives/${BASE_DRIVE_ID}`, body: base },
    { operationId: 'putGuestDriveByID', method: 'PUT', path: `/drives/${LAYER_DRIVE_ID}`, body: layer },
    { operationId: 'putGuestNetworkInterfaceByID', method: 'PUT', path: `/network-interfaces/${NET_IFACE_ID}`, body: net },
    ...(vsock ? [{ operationId: 'putGuestVsock', method: 'PUT', path: '/vsock', body: vsock } as const] : []),
    { operationId: 'createSyncAction', method: 'PUT', path: '/actions', body: start },
  ];
}

/** Sends one call through the client's typed method for its operation. */
export async function sendBootCall(client: FirecrackerApiClient, call: BootCall, options?: RequestOptions): Promise<void> {
  switch (call.operationId) {
    case 'putMachineConfiguration':
      return client.putMachineConfiguration(call.body, options);
    case 'putGuestBootSource':
      return client.putGuestBootSource(call.body, options);
    case 'putGuestDriveByID':
      return client.putGuestDriveByID(call.body, options);
    case 'putGuestNetworkInterfaceByID':
      return client.putGuestNetworkInterfaceByID(call.body, options);
    case 'putGuestVsock':
      return client.putGuestVsock(call.body, options);
    case 'createSyncAction':
      return client.createSyncAction(call.body, options);
  }
}
