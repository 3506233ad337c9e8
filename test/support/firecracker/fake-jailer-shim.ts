// Writes the stand-in `jailer` executable (see fake-jailer.ts) and reads its log.
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { shellQuote } from '../../../src/shared/shell.ts';
import { readJsonLines } from './fake-firecracker-shim.ts';

export interface FakeJailerOptions {
  /** Where the stand-in appends its argv and steps (JSON lines). */
  readonly log: string;
  /** A /proc/mounts to find cgroup hierarchies in (a fake tree); default the real one. */
  readonly procMounts?: string;
}

/** Writes `<dir>/jailer` and returns its path. */
export function writeFakeJailer(dir: string, options: FakeJailerOptions): string {
  const script = fileURLToPath(new URL('./fake-jailer.ts', import.meta.url));
  const tsx = import.meta.resolve('tsx');
  const lines = [
    '#!/bin/sh',
    '# Stand-in jailer for tests (written by fake-jailer-shim.ts): fake-jailer.ts checks the',
    '# arguments and builds the jail, then prints the commands that exec Firecracker from this shell.',
    `export FAKE_JAILER_LOG=${shellQuote(options.log)}`,
    options.procMounts === undefined ? 'unset FAKE_JAILER_PROC_MOUNTS' : `export FAKE_JAILER_PROC_MOUNTS=${shellQuote(options.procMounts)}`,
    'FAKE_JAILER_SELF_PID=$$',
    'export FAKE_JAILER_SELF_PID',
    `plan=$(${shellQuote(process.execPath)} --import ${shellQuote(tsx)} ${shellQuote(script)} "$@") || exit $?`,
    'eval "$plan"',
    '',
  ];
  const path = join(dir, 'jailer');
  writeFileSync(path, lines.join('\n'));
  chmodSync(path, 0o755);
  return path;
}

/** The argv the stand-in was run with, one entry per run. */
export function loggedJailerArgv(log: string): string[][] {
  return readJsonLines(log)
    .filter((e) => e.event === 'argv')
    .map((e) => (Array.isArray(e.argv) ? e.argv.map(String) : []));
}
