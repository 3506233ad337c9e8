// Reading one network device (and its addresses) through iproute2's JSON output.
import { run, CommandError } from '../shared/exec.ts';

export interface IpLink {
  ifname: string;
  operstate?: string;
  address?: string;
  flags?: string[];
  master?: string;
  linkinfo?: { info_kind?: string };
}

export interface IpLinkAddresses extends IpLink {
  addr_info?: { family?: string; local: string; prefixlen: number }[];
}

/** The device, or undefined when there is none of that name. */
export function showLink(name: string): Promise<IpLink | undefined> {
  return showDevice<IpLink>('link', name);
}

/** The device with its addresses, or undefined when there is none of that name. */
export function showAddresses(name: string): Promise<IpLinkAddresses | undefined> {
  return showDevice<IpLinkAddresses>('addr', name);
}

async function showDevice<T>(what: 'link' | 'addr', name: string): Promise<T | undefined> {
  try {
    const { stdout } = await run('ip', ['-j', '-d', what, 'show', 'dev', name]);
    return (JSON.parse(stdout) as T[])[0];
  } catch (error) {
    if (error instanceof CommandError && /does not exist|Cannot find device/.test(error.stderr)) return undefined;
    throw error;
  }
}
