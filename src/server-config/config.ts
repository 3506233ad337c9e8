// The workshop server's configuration: environment variables, each overridable by a matching
// --flag (as the agent's src/config/config.ts). A bad value stops start-up with one line naming it.
import type { PlacementPolicy } from '../workshops/model.ts';

export interface ServerConfig {
  readonly port: number;
  readonly host: string;
  readonly dataDir: string;
  readonly databaseUrl: string | undefined;
  readonly placement: PlacementPolicy;
  readonly workerPollS: number;
  readonly workerDownAfter: number;
  /** Seats of a worker down this long are made again on other workers; 0: they wait for it. */
  readonly seatMoveAfterS: number;
  readonly seatReadyTimeoutS: number;
  readonly joinRateLimit: number;
  readonly sessionTtlS: number;
  readonly secureCookies: 'auto' | 'always' | 'never';
  readonly trustProxy: boolean;
  readonly logLevel: string;
}

export class ServerConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
    this.name = 'ServerConfigError';
  }
}

interface Setting {
  readonly env: string;
  readonly flag: string;
  readonly help: string;
  readonly fallback: string | undefined;
}

export const SERVER_SETTINGS = {
  port: { env: 'PORT', flag: '--port', help: 'TCP port of the server (API, learner pages, proxy)', fallback: '8080' },
  host: { env: 'HOST', flag: '--host', help: 'address to bind', fallback: '127.0.0.1' },
  dataDir: {
    env: 'DATA_DIR',
    flag: '--data-dir',
    help: 'the embedded database (when DATABASE_URL is unset)',
    fallback: '/var/lib/clarateach/server',
  },
  databaseUrl: {
    env: 'DATABASE_URL',
    flag: '--database-url',
    help: 'PostgreSQL (postgres://…); shared by several servers',
    fallback: undefined,
  },
  placement: { env: 'PLACEMENT', flag: '--placement', help: 'spread (least loaded worker) | pack (fullest with room)', fallback: 'spread' },
  workerPollS: { env: 'WORKER_POLL_S', flag: '--worker-poll-s', help: "how often each worker's /health is polled (s)", fallback: '10' },
  workerDownAfter: {
    env: 'WORKER_DOWN_AFTER',
    flag: '--worker-down-after',
    help: 'failed polls in a row that mark a worker down',
    fallback: '2',
  },
  seatMoveAfterS: {
    env: 'SEAT_MOVE_AFTER_S',
    flag: '--seat-move-after-s',
    help: 'seats of a worker down this long get fresh VMs on other workers (their files stay on the lost one); 0: never',
    fallback: '300',
  },
  seatReadyTimeoutS: {
    env: 'SEAT_READY_TIMEOUT_S',
    flag: '--seat-ready-timeout-s',
    help: "how long a seat's VM may take to be ready (s)",
    fallback: '300',
  },
  joinRateLimit: { env: 'JOIN_RATE_LIMIT', flag: '--join-rate-limit', help: 'joins per minute per client address', fallback: '30' },
  sessionTtlS: { env: 'SESSION_TTL_S', flag: '--session-ttl-s', help: "lifetime of an instructor's session (s)", fallback: '43200' },
  secureCookies: {
    env: 'SECURE_COOKIES',
    flag: '--secure-cookies',
    help: 'auto (when the request is https) | always | never',
    fallback: 'auto',
  },
  trustProxy: {
    env: 'TRUST_PROXY',
    flag: '--trust-proxy',
    help: 'true: X-Forwarded-* of a TLS proxy in front are believed',
    fallback: 'false',
  },
  logLevel: { env: 'LOG_LEVEL', flag: '--log-level', help: 'pino log level', fallback: 'info' },
} as const satisfies Record<keyof ServerConfig, Setting>;

function integer(s: Setting, raw: string, min: number, max: number): number {
  if (!/^\d+$/.test(raw)) throw new ServerConfigError(s.env, `must be a whole number, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ServerConfigError(s.env, `must be between ${min} and ${max}, got ${value}`);
  return value;
}

function oneOf<T extends string>(s: Setting, raw: string, choices: readonly T[]): T {
  if (!(choices as readonly string[]).includes(raw)) throw new ServerConfigError(s.env, `must be ${choices.join(' or ')}, got "${raw}"`);
  return raw as T;
}

/** Flags (`--port 1234` or `--port=1234`) over environment variables over defaults. */
export function loadServerConfig(env: NodeJS.ProcessEnv, argv: readonly string[] = []): ServerConfig {
  const flags = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (!arg.startsWith('--')) throw new ServerConfigError('arguments', `unexpected argument "${arg}"`);
    const eq = arg.indexOf('=');
    if (eq > 0) {
      flags.set(arg.slice(0, eq), arg.slice(eq + 1));
      continue;
    }
    const value = argv[i + 1];
    if (value === undefined) throw new ServerConfigError(arg, 'needs a value');
    flags.set(arg, value);
    i++;
  }
  const known = new Set<string>(Object.values(SERVER_SETTINGS).map((s) => s.flag));
  for (const flag of flags.keys()) if (!known.has(flag)) throw new ServerConfigError(flag, 'unknown flag (see `clarateach server --help`)');
  const source = (s: Setting): string | undefined => {
    const value = flags.get(s.flag) ?? env[s.env];
    return value === undefined || value === '' ? s.fallback : value;
  };
  const text = (s: Setting): string => source(s) ?? '';
  const S = SERVER_SETTINGS;
  const dataDir = text(S.dataDir);
  if (!dataDir.startsWith('/')) throw new ServerConfigError('DATA_DIR', `must be an absolute path, got "${dataDir}"`);
  const databaseUrl = source(S.databaseUrl);
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new ServerConfigError('DATABASE_URL', 'must be a postgres:// or postgresql:// URL');
  }
  return {
    port: integer(S.port, text(S.port), 0, 65535),
    host: text(S.host),
    dataDir: dataDir.replace(/\/+$/, '') || '/',
    databaseUrl,
    placement: oneOf(S.placement, text(S.placement), ['spread', 'pack'] as const),
    workerPollS: integer(S.workerPollS, text(S.workerPollS), 1, 3600),
    workerDownAfter: integer(S.workerDownAfter, text(S.workerDownAfter), 1, 100),
    seatMoveAfterS: integer(S.seatMoveAfterS, text(S.seatMoveAfterS), 0, 7 * 86_400),
    seatReadyTimeoutS: integer(S.seatReadyTimeoutS, text(S.seatReadyTimeoutS), 1, 600),
    joinRateLimit: integer(S.joinRateLimit, text(S.joinRateLimit), 1, 100_000),
    sessionTtlS: integer(S.sessionTtlS, text(S.sessionTtlS), 60, 30 * 86_400),
    secureCookies: oneOf(S.secureCookies, text(S.secureCookies), ['auto', 'always', 'never'] as const),
    trustProxy: oneOf(S.trustProxy, text(S.trustProxy), ['true', 'false'] as const) === 'true',
    logLevel: text(S.logLevel),
  };
}

export function serverConfigHelp(): string {
  return Object.values(SERVER_SETTINGS)
    .map((s) => `  ${s.flag.padEnd(24)} ${s.env.padEnd(20)} ${s.help} (default: ${s.fallback ?? 'unset'})`)
    .join('\n');
}
