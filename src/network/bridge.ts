// The VMs' bridge and its neighbor table, through iproute2. Every function checks, then acts.
import { CommandError, run } from '../shared/exec.ts';
import type { Cidr } from './cidr.ts';

interface LinkAddresses {
  flags?: string[];
  linkinfo?: { info_kind?: string };
  addr_info?: { family?: string; local: string; prefixlen: number }[];
}

/** Creates the bridge when missing, gives it the CIDR's address, and brings it up. */
export async function ensureBridge(name: string, cidr: Cidr): Promise<void> {
  // Asked on every create: one `ip` process when all is in place (the usual case).
  const link = await showAddresses(name);
  if (!link) {
    await run('ip', ['link', 'add', 'name', name, 'type', 'bridge']);
  } else if (link.linkinfo?.info_kind !== 'bridge') {
    throw new Error(`${name} exists but is not a bridge (BRIDGE_NAME)`);
  }
  const addrs = (link?.addr_info ?? []).filter((a) => a.family === undefined || a.family === 'inet');
  if (!addrs.some((a) => a.local === cidr.address && a.prefixlen === cidr.prefix)) {
    await run('ip', ['addr', 'add', cidr.text, 'dev', name]);
  }
  if (!link?.flags?.includes('UP')) await run('ip', ['link', 'set', name, 'up']);
}

/** The device with its addresses, or undefined when there is none of that name. */
async function showAddresses(name: string): Promise<LinkAddresses | undefined> {
  try {
    const { stdout } = await run('ip', ['-j', '-d', 'addr', 'show', 'dev', name]);
    return (JSON.parse(stdout) as LinkAddresses[])[0];
  } catch (error) {
    if (error instanceof CommandError && /does not exist|Cannot find device/.test(error.stderr)) return undefined;
    throw error;
  }
}

/** A permanent neighbor entry: no guest can take over another's address by answering ARP. */
export async function pinNeighbor(ip: string, mac: string, bridge: string): Promise<void> {
  await run('ip', ['neigh', 'replace', ip, 'lladdr', mac, 'dev', bridge, 'nud', 'permanent']);
}

export async function unpinNeighbor(ip: string, bridge: string): Promise<void> {
  await run('ip', ['neigh', 'del', ip, 'dev', bridge]).catch(() => undefined);
}
