// Bridge and TAP devices, through iproute2. Every function is idempotent: it checks, then acts.
import { run, CommandError } from '../shared/exec.ts';
import type { Cidr } from './cidr.ts';

interface IpLink {
  ifname: string;
  operstate?: string;
  flags?: string[];
  master?: string;
  linkinfo?: { info_kind?: string };
}

async function showLink(name: string): Promise<IpLink | undefined> {
  try {
    const { stdout } = await run('ip', ['-j', '-d', 'link', 'show', 'dev', name]);
    return (JSON.parse(stdout) as IpLink[])[0];
  } catch (error) {
    if (error instanceof CommandError && /does not exist|Cannot find device/.test(error.stderr)) return undefined;
    throw error;
  }
}

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

/**
 * Creates the TAP when missing and attaches it, up, to the bridge as an isolated port: isolated
 * ports forward only to the bridge itself, never to each other, so VMs cannot reach one another.
 */
export async function ensureTap(name: string, bridge: string, owner?: { uid: number; gid: number }): Promise<void> {
  const link = await showLink(name);
  // Owned by the VM's own user: an unowned TAP could be attached by any process on the host.
  const ownership = owner ? ['user', String(owner.uid), 'group', String(owner.gid)] : [];
  if (!link) await run('ip', ['tuntap', 'add', 'dev', name, 'mode', 'tap', ...ownership]);
  if (link?.master !== bridge) await run('ip', ['link', 'set', name, 'master', bridge]);
  await run('bridge', ['link', 'set', 'dev', name, 'isolated', 'on', 'learning', 'off']);
  if (!link?.flags?.includes('UP')) await run('ip', ['link', 'set', name, 'up']);
}

/** A permanent neighbor entry: no guest can take over another's address by answering ARP. */
export async function pinNeighbor(ip: string, mac: string, bridge: string): Promise<void> {
  await run('ip', ['neigh', 'replace', ip, 'lladdr', mac, 'dev', bridge, 'nud', 'permanent']);
}

export async function unpinNeighbor(ip: string, bridge: string): Promise<void> {
  await run('ip', ['neigh', 'del', ip, 'dev', bridge]).catch(() => undefined);
}

export async function deleteTap(name: string): Promise<void> {
  if (await showLink(name)) await run('ip', ['link', 'del', 'dev', name]);
}

/** Names of all TAP devices whose name matches `pattern`. */
export async function listTaps(pattern: RegExp): Promise<string[]> {
  const { stdout } = await run('ip', ['-j', '-d', 'link', 'show', 'type', 'tun']);
  return (JSON.parse(stdout) as IpLink[]).map((l) => l.ifname).filter((n) => pattern.test(n));
}
