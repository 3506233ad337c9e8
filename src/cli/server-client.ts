// A small client of the workshop server's API for the CLI: a session token (from `clarateach
// login`, kept per SERVER_URL in ~/.config/clarateach/sessions.json, mode 0600) sent as a bearer.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { request, type Dispatcher } from 'undici';

/** The server answered with an error `{ error, code }`. */
export class ServerError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ServerError';
  }
}

export class ServerUnreachable extends Error {
  constructor(url: string, cause: unknown) {
    super(
      `cannot reach the workshop server at ${url}: ${cause instanceof Error ? ((cause as NodeJS.ErrnoException).code ?? cause.message) : String(cause)}`,
    );
    this.name = 'ServerUnreachable';
  }
}

export function sessionsFile(env: NodeJS.ProcessEnv = process.env): string {
  const base = env['CLARATEACH_CONFIG_DIR'] ?? join(env['XDG_CONFIG_HOME'] ?? join(homedir(), '.config'), 'clarateach');
  return join(base, 'sessions.json');
}

type Sessions = Record<string, { token: string; email: string; expires_at: string }>;

function readSessions(file: string): Sessions {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Sessions;
  } catch {
    return {};
  }
}

export function saveSession(file: string, serverUrl: string, session: Sessions[string]): void {
  const sessions = readSessions(file);
  sessions[serverUrl] = session;
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  writeFileSync(file, `${JSON.stringify(sessions, null, 2)}\n`, { mode: 0o600 });
}

export function storedToken(file: string, serverUrl: string): string | undefined {
  return readSessions(file)[serverUrl]?.token;
}

export class ServerClient {
  readonly baseUrl: string;

  constructor(
    baseUrl: string,
    private readonly token: string | undefined,
  ) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
  }

  async call<T>(method: Dispatcher.HttpMethod, path: string, body?: unknown): Promise<T> {
    let response: Dispatcher.ResponseData;
    try {
      response = await request(`${this.baseUrl}${path}`, {
        method,
        headers: {
          ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      throw new ServerUnreachable(this.baseUrl, error);
    }
    const text = await response.body.text();
    if (response.statusCode >= 400) {
      let parsed: { error?: string; code?: string } = {};
      try {
        parsed = JSON.parse(text) as typeof parsed;
      } catch {
        // not JSON: the status says it
      }
      throw new ServerError(response.statusCode, parsed.code ?? 'http_error', parsed.error ?? `HTTP ${response.statusCode}`);
    }
    return (text === '' ? undefined : JSON.parse(text)) as T;
  }
}
