// The VMs' bridge and its neighbor table, through iproute2. Every function checks, then acts.
import { run } from '../shared/exec.ts';
import type { Cidr } from './cidr.ts';
import { showLink } from './ip-link.ts';

/** Creates the bridge when missing, gives it the CIDR's address, and brings it up. */
export async function ensureBridge(name: string, cidr: Cidr): Promise<void> {
  const link = await showLink(name);
  if (!link) {
    await run('ip', ['link', 'add', 'name', name, 'type', 'bridge']);
  } else if (link.linkinfo?.info_kind !== 'bridge') {
    throw new Error(`${name} exists but is not a bridge (BRIDGE_NAME)`);
  }
  const { stdout } = await run('ip', ['-j', '-4', 'addr', 'show', 'dev', name]);
  const addrs = (JSON.parse(stdout) as { addr_info?: { local: string; prefixlen: number }[] }[])[0]?.addr_info ?? [];
  if (!addrs.some((a) => a.local === cidr.address && a.prefixlen === cidr.prefix)) {
    await run('ip', ['addr', 'add', cidr.text, 'dev', name]);
  }
  if (!link?.flags?.includes('UP')) await run('ip', ['link', 'set', name, 'up']);
}

/** A permanent neighbor entry: no guest can take over another's address by answering ARP. */
export async function pinNeighbor(ip: string, mac: string, bridge: string): Promise<void> {
  await run('ip', ['neigh', 'replace', ip, 'lladdr', mac, 'dev', bridge, 'nud', 'permanent']);
}

export async function unpinNeighbor(ip: string, bridge: string): Promise<void> {
  await run('ip', ['neigh', 'del', ip, 'dev', bridge]).catch(() => undefined);
}
