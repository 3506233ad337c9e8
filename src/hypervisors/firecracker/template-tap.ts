// The TAP of a snapshot template. A Firecracker snapshot keeps the guest's network interface, and
// a restore can only point a saved interface at another TAP (`network_overrides`), not add one: so
// the template boots with an interface too. A jailed VMM cannot create a TAP (no CAP_NET_ADMIN),
// only attach to an existing one, so the driver makes one for the template: owned by the
// template's uid, on no bridge, never up, removed once the snapshot is saved.
import { createHash } from 'node:crypto';
import { run } from '../../shared/exec.ts';

/** Template TAP names: not the lifecycle's `ct` + 8 hex digits, so its orphan sweep leaves them alone. */
export const TEMPLATE_TAP_PATTERN = /^ctsnap[0-9a-f]{8}$/;

export interface TemplateTaps {
  /** Makes the TAP `name`, owned by `owner`, unconnected. */
  create(name: string, owner: { readonly uid: number; readonly gid: number }): Promise<void>;
  /** Removes it; nothing when it is gone. */
  remove(name: string): Promise<void>;
}

/** `ctsnap` + 8 hex digits of the template VM's id (14 bytes: Linux allows 15). */
export function templateTapName(vmId: string): string {
  return `ctsnap${createHash('sha256').update(vmId).digest('hex').slice(0, 8)}`;
}

/**
 * Template TAPs through iproute2, in `netns` (a namespace handle, the jailer's `--netns`) when
 * given. Creating one first removes those an earlier template boot left (an agent crash): the
 * snapshot store boots one template at a time.
 */
export function iprouteTemplateTaps(netns?: string): TemplateTaps {
  const ip = (args: readonly string[]): Promise<{ stdout: string }> =>
    netns === undefined ? run('ip', args) : run('nsenter', [`--net=${netns}`, 'ip', ...args]);
  const names = async (): Promise<string[]> => {
    const { stdout } = await ip(['-j', 'link', 'show', 'type', 'tun']);
    const links = JSON.parse(stdout || '[]') as { ifname?: string }[];
    return links.map((l) => l.ifname ?? '').filter((n) => TEMPLATE_TAP_PATTERN.test(n));
  };
  return {
    async create(name, owner) {
      if (!TEMPLATE_TAP_PATTERN.test(name)) throw new Error(`not a template TAP name: ${name}`);
      for (const left of await names()) await ip(['link', 'del', 'dev', left]);
      await ip(['tuntap', 'add', 'dev', name, 'mode', 'tap', 'user', String(owner.uid), 'group', String(owner.gid)]);
    },
    async remove(name) {
      if ((await names()).includes(name)) await ip(['link', 'del', 'dev', name]);
    },
  };
}
