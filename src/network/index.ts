// The host network as the VM lifecycle sees it: a bridge, and per VM an isolated TAP, a pinned
// neighbor entry and an anti-spoofing guard.
import type { Cidr } from './cidr.ts';
import { allowVm, forgetVm, type VmEndpoint } from './firewall.ts';
import { deleteTap, ensureBridge, ensureTap, listTaps, pinNeighbor, unpinNeighbor } from './links.ts';

export type { VmEndpoint } from './firewall.ts';

export interface NetworkPort {
  ensureBridge(name: string, cidr: Cidr): Promise<void>;
  /** TAP on the bridge (isolated port), neighbor entry pinned, guard element added. Idempotent. */
  attach(vm: VmEndpoint, bridge: string, owner?: { uid: number; gid: number }): Promise<void>;
  /** Undoes attach. Idempotent. */
  detach(vm: VmEndpoint, bridge: string): Promise<void>;
  deleteTap(name: string): Promise<void>;
  listTaps(pattern: RegExp): Promise<string[]>;
}

export const hostNetwork: NetworkPort = {
  ensureBridge,
  async attach(vm, bridge, owner) {
    await ensureTap(vm.tap, bridge, owner);
    await pinNeighbor(vm.ip, vm.mac, bridge);
    await allowVm(vm);
  },
  async detach(vm, bridge) {
    await forgetVm(vm);
    await unpinNeighbor(vm.ip, bridge);
    await deleteTap(vm.tap);
  },
  deleteTap,
  listTaps,
};
