// Forwarding and NAT for the VM subnet, in an nftables table of the agent's own, so that
// `nft delete table ip clarateach` undoes all of it and nothing else is touched.
import { writeFile } from 'node:fs/promises';
import { run, commandExists } from '../shared/exec.ts';
import { intToIp, type Cidr } from './cidr.ts';

export const NFT_TABLE = 'clarateach';

export type NatResult = { readonly applied: true; readonly uplink: string } | { readonly applied: false; readonly reason: string };

async function defaultRouteInterface(): Promise<string | undefined> {
  const { stdout } = await run('ip', ['-j', '-4', 'route', 'show', 'default']);
  return (JSON.parse(stdout) as { dev?: string }[])[0]?.dev;
}

export function natRuleset(cidr: Cidr, bridge: string, uplink: string): string {
  const subnet = `${intToIp(cidr.network)}/${cidr.prefix}`;
  // Flush-and-fill in one transaction keeps the rules idempotent across restarts.
  return `table ip ${NFT_TABLE} {}
flush table ip ${NFT_TABLE}
table ip ${NFT_TABLE} {
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "${bridge}" oifname "${uplink}" ip saddr ${subnet} accept
    iifname "${uplink}" oifname "${bridge}" ct state established,related accept
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    ip saddr ${subnet} oifname "${uplink}" masquerade
  }
}
`;
}

/** Enables forwarding and NAT to the default-route interface; skipped (with the reason) without one. */
export async function ensureNat(cidr: Cidr, bridge: string): Promise<NatResult> {
  const uplink = await defaultRouteInterface();
  if (!uplink) return { applied: false, reason: 'no default route: VMs get no internet access' };
  if (!(await commandExists('nft'))) return { applied: false, reason: 'nft is not installed (apt-get install nftables)' };
  await writeFile('/proc/sys/net/ipv4/ip_forward', '1\n');
  await run('nft', ['-f', '-'], { input: natRuleset(cidr, bridge, uplink) });
  return { applied: true, uplink };
}
