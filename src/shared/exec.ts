// Running host commands (ip, nft, mkfs, qemu-img, ...) with errors that say what failed.
import { execFile } from 'node:child_process';

export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly exitCode: number | null,
    readonly stderr: string,
  ) {
    super(`${command} failed${exitCode === null ? '' : ` (exit ${exitCode})`}: ${stderr.trim() || 'no output'}`);
    this.name = 'CommandError';
  }
}

export interface RunResult {
  readonly stdout: string;
  readonly stderr: string;
}

export function run(
  file: string,
  args: readonly string[],
  options: { timeoutMs?: number; input?: string; env?: NodeJS.ProcessEnv; cwd?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      { timeout: options.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024, env: options.env, cwd: options.cwd },
      (error, stdout, stderr) => {
        if (error) {
          const code = typeof error.code === 'number' ? error.code : null;
          const why = code === null && typeof error.code === 'string' ? `${error.code} ${stderr}` : stderr;
          reject(new CommandError([file, ...args].join(' '), code, why || error.message));
          return;
        }
        resolve({ stdout, stderr });
      },
    );
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

/** True when `file` can be found on PATH (or is an existing absolute path). */
export async function commandExists(file: string): Promise<boolean> {
  try {
    await run('sh', ['-c', `command -v "$1"`, 'sh', file]);
    return true;
  } catch {
    return false;
  }
}
