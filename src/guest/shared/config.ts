// Configuration of the guest workspace services, read from the environment.
// Every problem is reported as a ConfigError naming the offending variable.
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { GUEST_PORTS } from '../contract.ts';

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
    this.name = 'ConfigError';
  }
}

export type ServiceName = 'terminal' | 'files';

export interface CommonConfig {
  readonly host: string;
  readonly port: number;
  /** Absolute path of the workspace (not yet symlink-resolved). */
  readonly workspaceDir: string;
}

export interface TerminalConfig extends CommonConfig {
  readonly shell: string;
  readonly detachedTtlS: number;
  readonly scrollbackBytes: number;
}

export interface FilesConfig extends CommonConfig {
  readonly maxUploadBytes: number;
}

export const DEFAULT_PORTS: Readonly<Record<ServiceName, number>> = GUEST_PORTS;
export const DEFAULT_WORKSPACE_DIR = '/home/learner';
export const DEFAULT_SHELL = '/bin/bash';
export const DEFAULT_DETACHED_TTL_S = 3600;
export const DEFAULT_SCROLLBACK_BYTES = 512 * 1024;
export const MIN_SCROLLBACK_BYTES = 256 * 1024;
export const MAX_SCROLLBACK_BYTES = 64 * 1024 * 1024;
export const DEFAULT_MAX_UPLOAD_BYTES = 2 * 1024 * 1024 * 1024;
/** setTimeout cannot wait longer than 2^31-1 ms. */
const MAX_TTL_S = Math.floor((2 ** 31 - 1) / 1000);

type Env = Readonly<Record<string, string | undefined>>;

function raw(env: Env, name: string): string | undefined {
  const value = env[name];
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  return trimmed === '' ? undefined : trimmed;
}

function integer(env: Env, name: string, fallback: number, min: number, max: number): number {
  const value = raw(env, name);
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value)) throw new ConfigError(name, `expected a non-negative integer, got ${JSON.stringify(value)}`);
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new ConfigError(name, `must be between ${min} and ${max}, got ${value}`);
  }
  return n;
}

function absolutePath(env: Env, name: string, fallback: string): string {
  const value = raw(env, name) ?? fallback;
  if (!path.isAbsolute(value)) throw new ConfigError(name, `must be an absolute path, got ${JSON.stringify(value)}`);
  if (value.includes('\0')) throw new ConfigError(name, 'must not contain NUL');
  return path.normalize(value);
}

function common(env: Env, service: ServiceName): CommonConfig {
  return {
    host: raw(env, 'HOST') ?? '0.0.0.0',
    port: integer(env, 'PORT', DEFAULT_PORTS[service], 0, 65535),
    workspaceDir: absolutePath(env, 'WORKSPACE_DIR', DEFAULT_WORKSPACE_DIR),
  };
}

export function loadTerminalConfig(env: Env): TerminalConfig {
  return {
    ...common(env, 'terminal'),
    shell: absolutePath(env, 'SHELL', DEFAULT_SHELL),
    detachedTtlS: integer(env, 'TERMINAL_DETACHED_TTL_S', DEFAULT_DETACHED_TTL_S, 0, MAX_TTL_S),
    scrollbackBytes: integer(env, 'TERMINAL_SCROLLBACK_BYTES', DEFAULT_SCROLLBACK_BYTES, MIN_SCROLLBACK_BYTES, MAX_SCROLLBACK_BYTES),
  };
}

export function loadFilesConfig(env: Env): FilesConfig {
  return {
    ...common(env, 'files'),
    maxUploadBytes: integer(env, 'FILES_MAX_UPLOAD_BYTES', DEFAULT_MAX_UPLOAD_BYTES, 1, Number.MAX_SAFE_INTEGER),
  };
}

/** Startup checks that need the filesystem. */
export async function checkWorkspaceDir(dir: string): Promise<void> {
  try {
    const st = await stat(dir);
    if (!st.isDirectory()) throw new ConfigError('WORKSPACE_DIR', `${dir} is not a directory`);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new ConfigError('WORKSPACE_DIR', `${dir} is not usable (${code})`);
  }
}

export async function checkShell(shell: string): Promise<void> {
  try {
    const st = await stat(shell);
    if (!st.isFile() || (st.mode & 0o111) === 0) throw new ConfigError('SHELL', `${shell} is not an executable file`);
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new ConfigError('SHELL', `${shell} is not usable (${code})`);
  }
}
