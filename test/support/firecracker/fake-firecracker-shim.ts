// Test helpers around the stand-in Firecracker: writes an executable named `firecracker` that runs
// fake-firecracker.ts (usable as the driver's `firecrackerBin`), and reads the logs it appends to.
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { shellQuote } from '../../../src/shared/shell.ts';

export interface FakeFirecrackerOptions {
  /** Where the stand-in appends spec violations (JSON lines); a test expects it absent or empty. */
  readonly violationsLog: string;
  /** Where the stand-in appends its events and every request it answered (JSON lines). */
  readonly requestLog?: string;
  /** Make InstanceStart fail with this reason. */
  readonly failInstanceStart?: string;
  /** Simulate a guest that ignores Ctrl-Alt-Del. */
  readonly ignoreCtrlAltDel?: boolean;
  /** Simulate a guest whose init powers off (not reboots) on Ctrl-Alt-Del: the VMM lives on. */
  readonly guestPowersOff?: boolean;
  readonly shutdownDelayMs?: number;
  readonly specPath?: string;
  /** The version it reports and behaves as (default 1.8.0: no network_overrides). */
  readonly version?: string;
  /** How the emulated guest answers an identity line (default ok). */
  readonly guestIdentity?: 'ok' | 'refuse' | 'silent';
}

/** Writes `<dir>/firecracker`, a shell script that execs the stand-in (same pid), and returns its path. */
export function writeFakeFirecracker(dir: string, options: FakeFirecrackerOptions): string {
  const script = fileURLToPath(new URL('./fake-firecracker.ts', import.meta.url));
  const tsx = import.meta.resolve('tsx');
  const vars: Record<string, string | undefined> = {
    FAKE_FIRECRACKER_VIOLATIONS_LOG: options.violationsLog,
    FAKE_FIRECRACKER_REQUEST_LOG: options.requestLog,
    FAKE_FIRECRACKER_FAIL_INSTANCE_START: options.failInstanceStart,
    FAKE_FIRECRACKER_IGNORE_CTRL_ALT_DEL: options.ignoreCtrlAltDel ? '1' : undefined,
    FAKE_FIRECRACKER_GUEST_POWERS_OFF: options.guestPowersOff ? '1' : undefined,
    FAKE_FIRECRACKER_SHUTDOWN_DELAY_MS: options.shutdownDelayMs?.toString(),
    FIRECRACKER_OPENAPI_SPEC: options.specPath,
    FAKE_FIRECRACKER_VERSION: options.version,
    FAKE_FIRECRACKER_GUEST_IDENTITY: options.guestIdentity,
  };
  const lines = ['#!/bin/sh', '# Stand-in firecracker for tests (written by fake-firecracker-shim.ts).'];
  for (const [name, value] of Object.entries(vars)) {
    lines.push(value === undefined ? `unset ${name}` : `export ${name}=${shellQuote(value)}`);
  }
  lines.push(`exec ${shellQuote(process.execPath)} --import ${shellQuote(tsx)} ${shellQuote(script)} "$@"`, '');
  const path = join(dir, 'firecracker');
  writeFileSync(path, lines.join('\n'));
  chmodSync(path, 0o755);
  return path;
}

/** The JSON lines of a log the stand-in appended to ([] when it does not exist). */
export function readJsonLines(path: string): Record<string, unknown>[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

export interface LoggedRequest {
  readonly method: string;
  readonly path: string;
  readonly body: unknown;
  readonly status: number;
  readonly fault?: string;
}

/** The requests the stand-in answered, in order. */
export function loggedRequests(requestLog: string): LoggedRequest[] {
  return readJsonLines(requestLog)
    .filter((e) => e.event === 'request')
    .map((e) => ({
      method: String(e.method),
      path: String(e.path),
      body: e.body,
      status: Number(e.status),
      ...(typeof e.fault === 'string' ? { fault: e.fault } : {}),
    }));
}

/** Pids of the stand-ins that logged to `requestLog` (one per process started). */
export function loggedPids(requestLog: string): number[] {
  return readJsonLines(requestLog)
    .filter((e) => e.event === 'listening')
    .map((e) => Number(e.pid));
}
