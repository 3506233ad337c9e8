// IPv4 arithmetic for the bridge subnet and per-seat addresses.

export interface Cidr {
  /** The bridge's own address, e.g. 192.168.100.1. */
  readonly address: string;
  readonly prefix: number;
  readonly network: number;
  readonly broadcast: number;
  readonly gateway: number;
  readonly netmask: string;
  /** Canonical text, e.g. 192.168.100.1/24. */
  readonly text: string;
}

export function ipToInt(ip: string): number {
  const parts = ip.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) {
    throw new Error(`"${ip}" is not an IPv4 address`);
  }
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

export function intToIp(value: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(value / 2 ** shift) % 256).join('.');
}

export function parseCidr(text: string): Cidr {
  const match = /^([\d.]+)\/(\d{1,2})$/.exec(text.trim());
  if (!match) throw new Error(`"${text}" is not an IPv4 CIDR such as 192.168.100.1/24`);
  const address = match[1] ?? '';
  const prefix = Number(match[2]);
  if (prefix < 8 || prefix > 30) throw new Error(`prefix /${prefix} must be between /8 and /30`);
  const gateway = ipToInt(address);
  const size = 2 ** (32 - prefix);
  const network = gateway - (gateway % size);
  const broadcast = network + size - 1;
  if (gateway === network || gateway === broadcast) {
    throw new Error(`${address} is the network or broadcast address of /${prefix}; give the bridge a host address`);
  }
  return { address, prefix, network, broadcast, gateway, netmask: intToIp(2 ** 32 - size), text: `${address}/${prefix}` };
}

/** The address the guide promises seat N: network + 10 + N. */
export function preferredSeatIp(cidr: Cidr, seatId: number): number {
  return cidr.network + 10 + seatId;
}

/** Highest seat number whose preferred address still fits in the subnet. */
export function maxSeatId(cidr: Cidr): number {
  return cidr.broadcast - 1 - (cidr.network + 10);
}

/**
 * Seat N gets network+10+N when free; when another VM holds it, the lowest free host address.
 * Returns undefined when the subnet is full.
 */
export function allocateIp(cidr: Cidr, seatId: number, used: ReadonlySet<number>): number | undefined {
  const preferred = preferredSeatIp(cidr, seatId);
  const usable = (ip: number): boolean => ip > cidr.network && ip < cidr.broadcast && ip !== cidr.gateway && !used.has(ip);
  if (usable(preferred)) return preferred;
  for (let ip = cidr.network + 2; ip < cidr.broadcast; ip++) {
    if (usable(ip)) return ip;
  }
  return undefined;
}
