// One unprivileged system user per VM, so that VMMs cannot signal, trace or read one another.
// Users are created on first use and kept (the name follows the VM's TAP, so a later VM on the
// same address reuses it); creation is serialised because useradd locks /etc/passwd, lookups read
// it in-process.
import { readFile } from 'node:fs/promises';
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

/** Where useradd writes them; read in-process (a lookup is on every create's path). */
const PASSWD = '/etc/passwd';

/** The user as /etc/passwd has it (useradd writes there), or undefined. */
export async function lookupVmUser(name: string, passwd = PASSWD): Promise<VmUser | undefined> {
  const text = await readFile(passwd, 'utf8').catch(() => '');
  for (const line of text.split('\n')) {
    const fields = line.split(':');
    if (fields[0] !== name) continue;
    const uid = Number(fields[2]);
    const gid = Number(fields[3]);
    if (Number.isInteger(uid) && Number.isInteger(gid) && fields[2] !== '' && fields[3] !== '') return { name, uid, gid };
  }
  return undefined;
}

/** The user `name`, made when missing. Lookups run at once; creations one at a time (useradd locks /etc/passwd). */
export async function ensureVmUser(name: string): Promise<VmUser> {
  const existing = await lookupVmUser(name);
  if (existing) return existing;
  const next = queue.then(async () => {
    const again = await lookupVmUser(name);
    if (again) return again;
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
    const created = await lookupVmUser(name);
    if (!created) throw new Error(`user ${name} was not created`);
    return created;
  });
  queue = next.catch(() => undefined);
  return next;
}
