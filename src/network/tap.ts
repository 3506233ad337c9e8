// A VM's TAP device: its name and MAC (both derived from the VM's address) and making, listing
// and removing it through iproute2. Every function checks, then acts.
import type { CommandSession } from '../shared/command-session.ts';
import { CommandError, run } from '../shared/exec.ts';
import { intToIp } from './cidr.ts';
import { showLink, type IpLink } from './ip-link.ts';

/** TAP names this agent makes (see tapNameForIp); nothing else on the host is ever touched. */
export const TAP_PATTERN = /^ct[0-9a-f]{8}$/;

/** A name the kernel accepts for a network device (IFNAMSIZ) and that is safe on a command line. */
export const INTERFACE_NAME = /^[A-Za-z0-9_.-]{1,15}$/;

/** TAP device name derived from the (unique) address: `ct` + 8 hex digits, 10 characters. */
export function tapNameForIp(ip: number): string {
  return `ct${ip.toString(16).padStart(8, '0')}`;
}

/** Locally administered unicast MAC derived from the address: 06:00:c0:a8:64:0b. */
export function macForIp(ip: number): string {
  const octets = [0x06, 0x00, ...intToIp(ip).split('.').map(Number)];
  return octets.map((o) => o.toString(16).padStart(2, '0')).join(':');
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

/**
 * A new VM's TAP in one group of the agent's `ip` session (each `ip` process costs milliseconds,
 * and a create is on the learner's clock): made, owned, on the bridge as an isolated port, up, with
 * its neighbor entry pinned. False when the TAP existed, or a line failed with the TAP there: the
 * caller then checks and repairs step by step (ensureTap).
 */
export async function addTap(
  ip: CommandSession,
  vm: { readonly tap: string; readonly ip: string; readonly mac: string },
  bridge: string,
  owner?: { uid: number; gid: number },
): Promise<boolean> {
  const ownership = owner ? ` user ${owner.uid} group ${owner.gid}` : '';
  const batch = [
    `tuntap add dev ${vm.tap} mode tap${ownership}`,
    `link set dev ${vm.tap} master ${bridge}`,
    `link set dev ${vm.tap} type bridge_slave isolated on learning off`,
    `link set dev ${vm.tap} up`,
    `neigh replace ${vm.ip} lladdr ${vm.mac} dev ${bridge} nud permanent`,
  ];
  try {
    await ip.run(batch);
    return true;
  } catch (error) {
    // With the TAP there (it existed, or a later line failed), the step-by-step path repairs
    // what is missing or fails with its own reason.
    if (error instanceof CommandError && (await showLink(vm.tap))) return false;
    throw error;
  }
}

export async function deleteTap(ip: CommandSession, name: string): Promise<void> {
  await ip.run([`link del dev ${name}`]).catch((error: unknown) => {
    if (!(error instanceof CommandError && /Cannot find device/.test(error.stderr))) throw error;
  });
}

/** Names of all TAP devices whose name matches `pattern` (by default: the ones this agent makes). */
export async function listTaps(pattern: RegExp = TAP_PATTERN): Promise<string[]> {
  const { stdout } = await run('ip', ['-j', '-d', 'link', 'show', 'type', 'tun']);
  return (JSON.parse(stdout) as IpLink[]).map((l) => l.ifname).filter((n) => pattern.test(n));
}
