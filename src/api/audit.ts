// The audit trail: one JSON line per control action (who, what, when, result), in the agent's
// log (marked "audit": true) and appended to STATE_DIR/audit.log.
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from 'pino';

export interface AuditEntry {
  readonly actor: string;
  readonly action: string;
  readonly target: string;
  readonly status: number;
  readonly result: 'ok' | 'denied' | 'failed';
  readonly remote?: string;
}

export class AuditLog {
  private readonly file: WriteStream | undefined;

  constructor(
    private readonly log: Logger,
    path: string | undefined,
  ) {
    if (path !== undefined) {
      mkdirSync(dirname(path), { recursive: true });
      this.file = createWriteStream(path, { flags: 'a', mode: 0o600 });
      // A full disk must not bring the agent down; the log line above still carries the entry.
      this.file.on('error', (error) => this.log.error({ err: error, path }, 'audit file write failed'));
    }
  }

  /** `log` is the request's, so the line carries its id. */
  record(entry: AuditEntry, log: Pick<Logger, 'info'> = this.log): void {
    const line = { at: new Date().toISOString(), ...entry };
    log.info({ audit: true, ...line }, `audit: ${entry.actor} ${entry.action} ${entry.target} -> ${entry.status}`);
    this.file?.write(`${JSON.stringify(line)}\n`);
  }

  close(): Promise<void> {
    return new Promise((resolve) => (this.file ? this.file.end(resolve) : resolve()));
  }
}
