// One unprivileged system user per VM, so that VMMs cannot signal, trace or read one another.
// Users are created on first use and kept (the name follows the VM's TAP, so a later VM on the
// same address reuses it); creation is serialised because useradd locks /etc/passwd.
import { run } from '../shared/exec.ts';

let queue: Promise<unknown> = Promise.resolve();

export interface VmUser {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
}

/** `ctvm-<tap>`: at most 15 characters for a 10-character TAP name. */
export function vmUserName(tapName: string): string {
  return `ctvm-${tapName.replace(/[^a-z0-9]/gi, '').slice(-10)}`.toLowerCase();
}

async function lookup(name: string): Promise<VmUser | undefined> {
  try {
    const { stdout } = await run('getent', ['passwd', name]);
    const fields = stdout.trim().split(':');
    return { name, uid: Number(fields[2]), gid: Number(fields[3]) };
  } catch {
    return undefined;
  }
}

export function ensureVmUser(name: string): Promise<VmUser> {
  const next = queue.then(async () => {
    const existing = await lookup(name);
    if (existing) return existing;
    await run('useradd', [
      '--system',
      '--no-create-home',
      '--home-dir',
      '/nonexistent',
      '--shell',
      '/usr/sbin/nologin',
      '--user-group',
      '--comment',
      'ClaraTeach VM',
      name,
    ]);
    const created = await lookup(name);
    if (!created) throw new Error(`user ${name} was not created`);
    return created;
  });
  queue = next.catch(() => undefined);
  return next;
}
