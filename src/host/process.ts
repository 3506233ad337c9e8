// Helpers to recognise and end detached VMM processes that may not be our children.
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

/** A process, told apart from a later one with the same pid by its start time. */
export interface VmmProcess {
  readonly pid: number;
  /** Clock ticks since boot, from /proc/PID/stat. */
  readonly startTime: number;
}

/** Start time of a process in clock ticks since boot, or undefined when it does not exist. */
export function processStartTime(pid: number): number | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const state = fields[0];
  if (state === 'Z' || state === 'X') return undefined;
  const start = Number(fields[19]);
  return Number.isFinite(start) ? start : undefined;
}

export function describeProcess(pid: number): VmmProcess | undefined {
  const startTime = processStartTime(pid);
  return startTime === undefined ? undefined : { pid, startTime };
}

export function isProcessAlive(proc: VmmProcess): boolean {
  return processStartTime(proc.pid) === proc.startTime;
}

/** Waits until the process is gone; true if it went within `timeoutMs`. */
export async function waitForExit(proc: VmmProcess, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isProcessAlive(proc)) {
    if (Date.now() >= deadline) return false;
    await sleep(50);
  }
  return true;
}

/** SIGKILL, then wait for the process to disappear. */
export async function killProcess(proc: VmmProcess): Promise<void> {
  if (!isProcessAlive(proc)) return;
  try {
    process.kill(proc.pid, 'SIGKILL');
  } catch {
    return;
  }
  await waitForExit(proc, 10_000);
}

/**
 * Processes whose command line mentions a path under `dir` (VMMs are started with their sockets
 * and disks under the VM's directory), as `{ proc, args }`. Finds VMMs the store does not know,
 * e.g. one started just before the agent crashed.
 */
export async function findProcessesUnder(dir: string): Promise<{ proc: VmmProcess; args: string[] }[]> {
  const { readdir, readFile } = await import('node:fs/promises');
  const prefix = dir.endsWith('/') ? dir : `${dir}/`;
  const found: { proc: VmmProcess; args: string[] }[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    let args: string[];
    try {
      args = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').filter(Boolean);
    } catch {
      continue;
    }
    if (!args.some((a) => a.includes(prefix))) continue;
    const proc = describeProcess(pid);
    if (proc) found.push({ proc, args });
  }
  return found;
}

/** The host's processes as the lifecycle's ProcessPort. */
export const hostProcesses = {
  findUnder: async (dir: string): Promise<VmmProcess[]> => (await findProcessesUnder(dir)).map((found) => found.proc),
  isAlive: isProcessAlive,
  kill: killProcess,
};
