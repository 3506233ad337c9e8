// Network isolation and egress, in nftables tables of the agent's own (`inet clarateach`,
// `bridge clarateach`), replaced atomically on every start so the rules are always exactly these:
//  - a VM reaches no other VM: TAPs are isolated bridge ports, and routed VM-to-VM traffic drops;
//  - a VM reaches no port of the host (only replies to connections the host opened get through);
//  - a VM reaches no link-local address (169.254.169.254, the cloud metadata service, above all);
//  - a VM cannot pretend to be another: frames from a TAP must carry that VM's MAC and address;
//  - egress follows EGRESS: nat (public internet through NAT), none, or an allow-list.
import { writeFile } from 'node:fs/promises';
import type { CommandSession } from '../shared/command-session.ts';
import { CommandError, run, commandExists } from '../shared/exec.ts';
import type { VmEndpoint } from '../vms/ports.ts';
import { intToIp, type Cidr } from './cidr.ts';

export const NFT_TABLE = 'clarateach';

export type EgressPolicy =
  { readonly mode: 'nat' } | { readonly mode: 'none' } | { readonly mode: 'allow'; readonly rules: readonly AllowRule[] };

export interface AllowRule {
  readonly cidr: string;
  /** Undefined: every port. */
  readonly ports?: { readonly from: number; readonly to: number };
}

/** Destinations that are never "the internet": private, shared, link-local, multicast, reserved. */
const NON_PUBLIC = [
  '0.0.0.0/8',
  '10.0.0.0/8',
  '100.64.0.0/10',
  '127.0.0.0/8',
  '169.254.0.0/16',
  '172.16.0.0/12',
  '192.0.0.0/24',
  '192.168.0.0/16',
  '198.18.0.0/15',
  '224.0.0.0/3',
];

/** Parses EGRESS: `nat`, `none`, or a comma-separated allow-list of `CIDR[:PORT[-PORT]]`. */
export function parseEgress(text: string): EgressPolicy {
  const value = text.trim();
  if (value === 'nat' || value === 'none') return { mode: value };
  const rules = value.split(',').map((entry): AllowRule => {
    const match = /^(\d{1,3}(?:\.\d{1,3}){3}\/\d{1,2})(?::(\d{1,5})(?:-(\d{1,5}))?)?$/.exec(entry.trim());
    if (!match) throw new Error(`"${entry}" is not CIDR[:PORT[-PORT]] (or use nat / none)`);
    const cidr = match[1] ?? '';
    const [address, prefix] = cidr.split('/');
    if (Number(prefix) > 32 || (address ?? '').split('.').some((o) => Number(o) > 255)) throw new Error(`"${cidr}" is not a valid CIDR`);
    if (match[2] === undefined) return { cidr };
    const from = Number(match[2]);
    const to = match[3] === undefined ? from : Number(match[3]);
    if (from < 1 || to > 65535 || to < from) throw new Error(`bad port range in "${entry}"`);
    return { cidr, ports: { from, to } };
  });
  return { mode: 'allow', rules };
}

export interface FirewallInput {
  readonly bridge: string;
  readonly cidr: Cidr;
  readonly egress: EgressPolicy;
  /** Default-route interface; undefined: no NAT (and so no egress). */
  readonly uplink: string | undefined;
  /** DNS server the guests are told to use; allowed through in allow-list mode. */
  readonly dns: string | undefined;
  readonly vms: readonly VmEndpoint[];
}

function guardElements(vms: readonly VmEndpoint[]): string {
  return vms.map((vm) => `"${vm.tap}" . ${vm.mac} . ${vm.ip}`).join(', ');
}

function egressRules(input: FirewallInput): string[] {
  const from = `iifname "${input.bridge}"`;
  if (input.egress.mode === 'none' || input.uplink === undefined) return [`${from} drop`];
  const out = `${from} oifname "${input.uplink}"`;
  if (input.egress.mode === 'nat') {
    return [`${out} ip daddr { ${NON_PUBLIC.join(', ')} } drop`, `${out} accept`, `${from} drop`];
  }
  const rules = input.egress.rules.map((r) =>
    r.ports === undefined
      ? `${out} ip daddr ${r.cidr} accept`
      : `${out} ip daddr ${r.cidr} meta l4proto { tcp, udp } th dport ${r.ports.from === r.ports.to ? r.ports.from : `${r.ports.from}-${r.ports.to}`} accept`,
  );
  if (input.dns) rules.push(`${out} ip daddr ${input.dns} meta l4proto { tcp, udp } th dport 53 accept`);
  return [...rules, `${from} drop`];
}

/** The whole ruleset, as one `nft -f` transaction. */
export function firewallRuleset(input: FirewallInput): string {
  const subnet = `${intToIp(input.cidr.network)}/${input.cidr.prefix}`;
  const b = input.bridge;
  const elements = guardElements(input.vms);
  return `table inet ${NFT_TABLE} {}
delete table inet ${NFT_TABLE}
table bridge ${NFT_TABLE} {}
delete table bridge ${NFT_TABLE}
table inet ${NFT_TABLE} {
  chain input {
    type filter hook input priority filter - 10; policy accept;
    iifname "${b}" ct state established,related accept
    iifname "${b}" drop
  }
  chain forward {
    type filter hook forward priority filter - 10; policy accept;
    iifname "${b}" oifname "${b}" drop
    iifname "${b}" ip daddr 169.254.0.0/16 drop
    iifname "${b}" meta nfproto ipv6 drop
    oifname "${b}" ct state established,related accept
    oifname "${b}" drop
${egressRules(input)
  .map((r) => `    ${r}`)
  .join('\n')}
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
${input.uplink ? `    ip saddr ${subnet} oifname "${input.uplink}" masquerade` : ''}
  }
}
table bridge ${NFT_TABLE} {
  set vms {
    type ifname . ether_addr . ipv4_addr;
${elements ? `    elements = { ${elements} }` : ''}
  }
  chain prerouting {
    type filter hook prerouting priority filter - 10; policy accept;
    iifname != "ct*" accept
    ether type ip iifname . ether saddr . ip saddr @vms accept
    ether type arp iifname . arp saddr ether . arp saddr ip @vms accept
    drop
  }
}
`;
}

async function defaultRouteInterface(): Promise<string | undefined> {
  const { stdout } = await run('ip', ['-j', '-4', 'route', 'show', 'default']);
  return (JSON.parse(stdout) as { dev?: string }[])[0]?.dev;
}

export interface FirewallResult {
  readonly uplink: string | undefined;
  readonly warnings: readonly string[];
}

/** Installs the ruleset; the bridge must exist. Throws when nftables is missing: no isolation, no VMs. */
export async function applyFirewall(input: Omit<FirewallInput, 'uplink'>): Promise<FirewallResult> {
  if (!(await commandExists('nft'))) throw new Error('nft is not installed (apt-get install nftables): VMs cannot be isolated');
  const uplink = await defaultRouteInterface();
  const warnings: string[] = [];
  if (!uplink && input.egress.mode !== 'none') warnings.push('no default route: VMs get no internet access (NAT skipped)');
  if (uplink && input.egress.mode !== 'none') await writeFile('/proc/sys/net/ipv4/ip_forward', '1\n');
  // The bridge needs no IPv6: without an address there, guests have nothing to reach over it.
  await writeFile(`/proc/sys/net/ipv6/conf/${input.bridge}/disable_ipv6`, '1\n').catch(() =>
    warnings.push('could not disable IPv6 on the bridge'),
  );
  await run('nft', ['-f', '-'], { input: firewallRuleset({ ...input, uplink }) });
  return { uplink, warnings };
}

function guardElement(vm: VmEndpoint): string {
  return `element bridge ${NFT_TABLE} vms { "${vm.tap}" . ${vm.mac} . ${vm.ip} }`;
}

/** Lets the VM's frames out of its TAP, through the agent's `nft` session. */
export async function allowVm(nft: CommandSession, vm: VmEndpoint): Promise<void> {
  await nft.run([`add ${guardElement(vm)}`]);
}

/** Takes the VM's element out again; one already gone (or never added) is fine. */
export async function forgetVm(nft: CommandSession, vm: VmEndpoint): Promise<void> {
  await nft.run([`delete ${guardElement(vm)}`]).catch((error: unknown) => {
    if (!(error instanceof CommandError && /No such file or directory/.test(error.stderr))) throw error;
  });
}
