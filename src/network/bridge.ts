// The VMs' bridge and its neighbor table, through iproute2. Every function checks, then acts.
import { readFileSync } from 'node:fs';
import type { CommandSession } from '../shared/command-session.ts';
import { run } from '../shared/exec.ts';
import { showAddresses } from './ip-link.ts';
import { macForIp } from './tap.ts';
import type { Cidr } from './cidr.ts';

/** Bridges this process set up or checked in full, by name and CIDR. */
const checked = new Set<string>();

/**
 * The bridge's own MAC, derived from its address like a VM's. Set, not inherited: a bridge takes
 * the lowest MAC of its ports, and a change of it flushes every neighbor entry on it, the pinned
 * ones included, whenever a new TAP with a lower (random) MAC joined.
 */
export function bridgeMac(cidr: Cidr): string {
  return macForIp(cidr.gateway);
}

/**
 * Creates the bridge when missing, gives it its MAC and the CIDR's address, and brings it up. Asked on every
 * create: once the bridge was checked in full, a look at the routing table (no process) is enough
 * while the CIDR's network is still routed on it (it is gone when the bridge is deleted or down).
 */
export async function ensureBridge(name: string, cidr: Cidr): Promise<void> {
  const key = `${name} ${cidr.text}`;
  if (checked.has(key) && routedOn(name, cidr)) return;
  checked.delete(key);
  const link = await showAddresses(name);
  if (!link) {
    await run('ip', ['link', 'add', 'name', name, 'type', 'bridge']);
  } else if (link.linkinfo?.info_kind !== 'bridge') {
    throw new Error(`${name} exists but is not a bridge (BRIDGE_NAME)`);
  }
  const mac = bridgeMac(cidr);
  if (link?.address !== mac) await run('ip', ['link', 'set', 'dev', name, 'address', mac]);
  const addrs = (link?.addr_info ?? []).filter((a) => a.family === undefined || a.family === 'inet');
  if (!addrs.some((a) => a.local === cidr.address && a.prefixlen === cidr.prefix)) {
    await run('ip', ['addr', 'add', cidr.text, 'dev', name]);
  }
  if (!link?.flags?.includes('UP')) await run('ip', ['link', 'set', name, 'up']);
  checked.add(key);
}

/**
 * Whether /proc/self/net/route (this process's namespace) has the CIDR's network, up, on `name`.
 * Read synchronously: a small kernel-made file, read at once, where the thread pool adds a hop.
 */
function routedOn(name: string, cidr: Cidr): boolean {
  // Addresses there are hex in the host's (little-endian) byte order.
  const hex = (value: number): string =>
    Buffer.from([24, 16, 8, 0].map((shift) => Math.floor(value / 2 ** shift) % 256).reverse())
      .toString('hex')
      .toUpperCase();
  const destination = hex(cidr.network);
  const mask = hex(2 ** 32 - 2 ** (32 - cidr.prefix));
  try {
    const table = readFileSync('/proc/self/net/route', 'utf8');
    return table.split('\n').some((line) => {
      const [iface, dest, , flags, , , , lineMask] = line.trim().split(/\s+/);
      return iface === name && dest === destination && lineMask === mask && (Number.parseInt(flags ?? '0', 16) & 1) === 1;
    });
  } catch {
    return false;
  }
}

/** A permanent neighbor entry: no guest can take over another's address by answering ARP. */
export async function pinNeighbor(ip: string, mac: string, bridge: string): Promise<void> {
  await run('ip', ['neigh', 'replace', ip, 'lladdr', mac, 'dev', bridge, 'nud', 'permanent']);
}

/** Through the agent's `ip` session; an entry already gone is fine. */
export async function unpinNeighbor(session: CommandSession, ip: string, bridge: string): Promise<void> {
  await session.run([`neigh del ${ip} dev ${bridge}`]).catch(() => undefined);
}
