// The host network as the VM lifecycle sees it (NetworkPort): a bridge, and per VM an isolated
// TAP, a pinned neighbor entry and an anti-spoofing guard.
import type { Addressing, GuestSubnet, NetworkPort } from '../vms/ports.ts';
import { allocateIp, intToIp, type Cidr } from './cidr.ts';
import { ensureBridge, pinNeighbor, unpinNeighbor } from './bridge.ts';
import { allowVm, forgetVm } from './firewall.ts';
import { ipSession, nftSession } from './sessions.ts';
import { addTap, deleteTap, ensureTap, listTaps, macForIp, tapNameForIp } from './tap.ts';

/** Seat N gets network + 10 + N when free; its TAP name and MAC follow from the address. */
export function seatAddressing(cidr: Cidr): Addressing {
  return { allocate: (seat, used) => allocateIp(cidr, seat, used), ipText: intToIp, mac: macForIp, tapName: tapNameForIp };
}

export function guestSubnet(cidr: Cidr): GuestSubnet {
  return { text: cidr.text, gateway: cidr.address, netmask: cidr.netmask };
}

export function createHostNetwork(bridge: string, cidr: Cidr): NetworkPort {
  // Kept open for the agent's life: no process is started per create or delete.
  const ip = ipSession();
  const nft = nftSession();
  ip.warm();
  nft.warm();
  return {
    addressing: seatAddressing(cidr),
    subnet: guestSubnet(cidr),
    ensureBridge: () => ensureBridge(bridge, cidr),
    async attach(vm, owner) {
      // Both sessions at once: the VM sends nothing before both are done.
      const [tap, guard] = await Promise.allSettled([addTap(ip, vm, bridge, owner), allowVm(nft, vm)]);
      if (tap.status === 'rejected') throw tap.reason;
      if (guard.status === 'rejected') throw guard.reason;
      if (!tap.value) {
        await ensureTap(vm.tap, bridge, owner);
        await pinNeighbor(vm.ip, vm.mac, bridge);
      }
    },
    async detach(vm) {
      await forgetVm(nft, vm);
      await unpinNeighbor(ip, vm.ip, bridge);
      await deleteTap(ip, vm.tap);
    },
    listTaps: () => listTaps(),
    deleteTap: (name) => deleteTap(ip, name),
  };
}
