// The host network as the VM lifecycle sees it (NetworkPort): a bridge, and per VM an isolated
// TAP, a pinned neighbor entry and an anti-spoofing guard.
import type { NetworkPort } from '../vms/ports.ts';
import { allocateIp, intToIp, type Cidr } from './cidr.ts';
import { ensureBridge, pinNeighbor, unpinNeighbor } from './bridge.ts';
import { allowVm, forgetVm } from './firewall.ts';
import { deleteTap, ensureTap, listTaps, macForIp, tapNameForIp } from './tap.ts';

export function createHostNetwork(bridge: string, cidr: Cidr): NetworkPort {
  return {
    addressing: { allocate: (seat, used) => allocateIp(cidr, seat, used), ipText: intToIp, mac: macForIp, tapName: tapNameForIp },
    subnet: { text: cidr.text, gateway: cidr.address, netmask: cidr.netmask },
    ensureBridge: () => ensureBridge(bridge, cidr),
    async attach(vm, owner) {
      await ensureTap(vm.tap, bridge, owner);
      await pinNeighbor(vm.ip, vm.mac, bridge);
      await allowVm(vm);
    },
    async detach(vm) {
      await forgetVm(vm);
      await unpinNeighbor(vm.ip, bridge);
      await deleteTap(vm.tap);
    },
    listTaps: () => listTaps(),
    deleteTap,
  };
}
