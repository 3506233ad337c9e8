// How the operator CLI speaks: human tables by default, the API's JSON with --json, one-line
// errors, and exit codes scripts can trust.
import { AgentError, AgentUnreachable } from '../../agent-client/client.ts';
import { ServerError, ServerUnreachable } from '../server-client.ts';

export const EXIT = {
  ok: 0,
  /** The agent refused or failed the request. */
  failed: 1,
  /** The command line was wrong. */
  usage: 2,
  /** No such VM, template or file. */
  notFound: 3,
  /** The agent could not be reached at all. */
  unreachable: 4,
} as const;

export class UsageError extends Error {}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Columns padded to their widest cell; `—` for empty values. */
export function printTable(headers: readonly string[], rows: readonly (readonly (string | number | boolean | null | undefined)[])[]): void {
  const text = rows.map((row) => row.map((cell) => (cell === null || cell === undefined || cell === '' ? '—' : String(cell))));
  const widths = headers.map((h, i) => Math.max(h.length, ...text.map((row) => (row[i] ?? '').length)));
  const line = (cells: readonly string[]): string =>
    cells
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  process.stdout.write(`${line(headers.map((h) => h.toUpperCase()))}\n`);
  for (const row of text) process.stdout.write(`${line(row)}\n`);
}

/** The error as one line on stderr, and the exit code that says what kind it was. */
export function reportError(error: unknown): number {
  if (error instanceof AgentError) {
    process.stderr.write(`clarateach: ${error.message} (${error.code})\n`);
    return error.status === 404 ? EXIT.notFound : EXIT.failed;
  }
  if (error instanceof AgentUnreachable) {
    process.stderr.write(`clarateach: ${error.message} (set AGENT_URL or --agent-url)\n`);
    return EXIT.unreachable;
  }
  if (error instanceof ServerError) {
    process.stderr.write(`clarateach: ${error.message} (${error.code})\n`);
    return error.status === 404 ? EXIT.notFound : EXIT.failed;
  }
  if (error instanceof ServerUnreachable) {
    process.stderr.write(`clarateach: ${error.message} (set SERVER_URL or --server-url)\n`);
    return EXIT.unreachable;
  }
  if (error instanceof UsageError) {
    process.stderr.write(`clarateach: ${error.message}\n`);
    return EXIT.usage;
  }
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`clarateach: ${message.split('\n')[0]}\n`);
  return EXIT.failed;
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1024 ** 3) return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
  return `${(bytes / 1024 ** 3).toFixed(2)} GiB`;
}

/** A progress line on stderr, redrawn at most ten times a second; `done()` ends it. */
export function progressLine(label: string, enabled: boolean): { update(done: number, total: number | undefined): void; done(): void } {
  let last = 0;
  let shown = false;
  const draw = (done: number, total: number | undefined): void => {
    const percent = total ? ` (${Math.floor((done / total) * 100)}%)` : '';
    process.stderr.write(`\r${label}: ${formatBytes(done)}${total === undefined ? '' : ` / ${formatBytes(total)}`}${percent}\x1b[K`);
    shown = true;
  };
  let latest: [number, number | undefined] = [0, undefined];
  return {
    update(done, total) {
      latest = [done, total];
      if (!enabled || Date.now() - last < 100) return;
      last = Date.now();
      draw(done, total);
    },
    done() {
      if (!enabled) return;
      draw(...latest);
      if (shown) process.stderr.write('\n');
    },
  };
}
