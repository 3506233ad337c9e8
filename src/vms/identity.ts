// The identity a restored guest is given, as one line on the host-to-guest channel. The guest's
// init (src/guest/init/clarateach-init, its identity agent) parses exactly this; both sides check every
// field, so a line that fails here never reaches a guest.
import { randomBytes } from 'node:crypto';
import type { GuestIdentity } from './ports.ts';

/** First word of an identity line; a guest refuses a line of another version. */
export const IDENTITY_VERSION = 'clarateach-identity/1';
/** What the guest sends when it is booted to "services ready" and waits for an identity (template boot). */
export const GUEST_READY_LINE = 'ready';
/** What the guest answers once it applied the identity. */
export const IDENTITY_APPLIED_PREFIX = 'identity-ok';

const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const HOSTNAME = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const SEED = /^[0-9a-f]{128}$/;

/** Fresh entropy for one restore. */
export function newSeedHex(): string {
  return randomBytes(64).toString('hex');
}

/** The identity as the line the guest reads (no newline). Throws on a field the guest would refuse. */
export function identityLine(id: GuestIdentity): string {
  const bad = (what: string): never => {
    throw new Error(`invalid guest identity: ${what}`);
  };
  if (!IPV4.test(id.ip)) bad(`ip ${id.ip}`);
  if (!IPV4.test(id.gateway)) bad(`gateway ${id.gateway}`);
  if (!Number.isInteger(id.prefixLength) || id.prefixLength < 1 || id.prefixLength > 32) bad(`prefix ${id.prefixLength}`);
  if (!MAC.test(id.mac)) bad(`mac ${id.mac}`);
  if (!HOSTNAME.test(id.hostname)) bad(`hostname ${id.hostname}`);
  if (!SEED.test(id.seedHex)) bad('seed (128 hex digits expected)');
  if (!Number.isSafeInteger(id.epochMs) || id.epochMs < 0) bad(`epoch ${id.epochMs}`);
  for (const server of id.dns) if (!IPV4.test(server)) bad(`dns ${server}`);
  const words = [
    IDENTITY_VERSION,
    `ip=${id.ip}`,
    `prefix=${id.prefixLength}`,
    `gw=${id.gateway}`,
    `mac=${id.mac}`,
    `host=${id.hostname}`,
    `seed=${id.seedHex}`,
    `epoch_ms=${id.epochMs}`,
  ];
  if (id.dns.length > 0) words.push(`dns=${id.dns.join(',')}`);
  return words.join(' ');
}

/** Netmask (255.255.255.0) to prefix length (24); undefined when not a contiguous mask. */
export function prefixLength(netmask: string): number | undefined {
  if (!IPV4.test(netmask)) return undefined;
  const value = netmask.split('.').reduce((acc, octet) => acc * 256 + Number(octet), 0);
  const bits = value.toString(2).padStart(32, '0');
  const ones = /^(1+)0*$/.exec(bits)?.[1];
  return ones === undefined ? undefined : ones.length;
}
