// What one run of a VMM left: how its process ended, and what it wrote to the console log (the
// guest's console and Firecracker's stderr). Start failures and the stop phase both read it.
import { stat } from 'node:fs/promises';
import { readTail } from '../../shared/files.ts';

const CONSOLE_TAIL_BYTES = 2_000;

export interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export function describeExit(exit: Exit): string {
  return exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
}

export async function fileSize(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}

/** What this run of the VMM wrote to the console log (its stderr lands there too), trimmed. */
export async function consoleSince(path: string, from: number): Promise<string> {
  return (await readTail(path, CONSOLE_TAIL_BYTES, from)).trim();
}
