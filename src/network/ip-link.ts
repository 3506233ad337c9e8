// Reading one network device through iproute2's JSON output.
import { run, CommandError } from '../shared/exec.ts';

export interface IpLink {
  ifname: string;
  operstate?: string;
  flags?: string[];
  master?: string;
  linkinfo?: { info_kind?: string };
}

/** The device, or undefined when there is none of that name. */
export async function showLink(name: string): Promise<IpLink | undefined> {
  try {
    const { stdout } = await run('ip', ['-j', '-d', 'link', 'show', 'dev', name]);
    return (JSON.parse(stdout) as IpLink[])[0];
  } catch (error) {
    if (error instanceof CommandError && /does not exist|Cannot find device/.test(error.stderr)) return undefined;
    throw error;
  }
}
