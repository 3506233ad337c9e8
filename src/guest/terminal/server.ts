// Terminal service: HTTP (health, session list) + WebSocket /terminal bridging to PTY shells.
// Protocol: see protocol.ts. Session policy: see sessions.ts.
import http from 'node:http';
import { WebSocket, WebSocketServer } from 'ws';
import type { RawData } from 'ws';
import type { TerminalConfig } from '../shared/config.ts';
import { listen, sendJson, splitTarget } from '../shared/http.ts';
import type { Logger } from '../shared/log.ts';
import { describeError } from '../shared/log.ts';
import { SESSION_ID_RE, parseClientFrame, parseDimensionParam } from './protocol.ts';
import { SessionLimitError, SessionManager, send } from './sessions.ts';
import type { Session, SpawnPty } from './sessions.ts';

export const DEFAULT_COLS = 80;
export const DEFAULT_ROWS = 24;
export const MAX_SESSIONS = 32;
/** Largest client frame accepted (a big paste); larger frames close the socket with 1009. */
export const MAX_FRAME_BYTES = 1024 * 1024;
export const PING_INTERVAL_MS = 30_000;

/**
 * Variables meant for this service only; they must not leak into the learner's shell
 * (PORT would make dev servers collide with 3001, NODE_ENV=production would make `npm install` skip devDependencies).
 */
const SERVICE_ENV = /^(PORT|HOST|WORKSPACE_DIR|NODE_ENV|NODE_OPTIONS|TERMINAL_.*|FILES_.*)$/;

export interface TerminalServerOptions {
  readonly config: TerminalConfig;
  readonly logger: Logger;
  /** Base environment of the shells (normally process.env). */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Injected for tests; defaults to node-pty's spawn, loaded lazily so the files service never loads the native addon. */
  readonly spawn?: SpawnPty;
  readonly maxSessions?: number;
  readonly pingIntervalMs?: number;
}

export interface RunningServer {
  readonly server: http.Server;
  readonly port: number;
  close(): Promise<void>;
}

export function shellEnv(base: Readonly<Record<string, string | undefined>>, config: TerminalConfig): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(base)) {
    if (value !== undefined && !SERVICE_ENV.test(key)) env[key] = value;
  }
  env.HOME ??= config.workspaceDir;
  env.LANG ??= 'C.UTF-8';
  env.SHELL = config.shell;
  env.TERM = 'xterm-256color';
  env.COLORTERM ??= 'truecolor';
  return env;
}

function rawDataToString(data: RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}

export async function startTerminalServer(opts: TerminalServerOptions): Promise<RunningServer> {
  const { config, logger } = opts;
  const spawn = opts.spawn ?? (await import('node-pty')).spawn;
  const manager = new SessionManager({
    spawn,
    shell: config.shell,
    cwd: config.workspaceDir,
    env: shellEnv(opts.env, config),
    detachedTtlS: config.detachedTtlS,
    scrollbackBytes: config.scrollbackBytes,
    maxSessions: opts.maxSessions ?? MAX_SESSIONS,
    logger,
  });

  const server = http.createServer((req, res) => {
    const { rawPath } = splitTarget(req.url);
    const route = rawPath === '/health' || rawPath === '/sessions' ? rawPath : null;
    if (route === null) {
      sendJson(res, 404, { error: 'not found', code: 'not_found' });
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendJson(res, 405, { error: 'method not allowed', code: 'method_not_allowed' }, { Allow: 'GET, HEAD' });
      return;
    }
    if (route === '/health') sendJson(res, 200, { status: 'ok', service: 'terminal', sessions: manager.size });
    else sendJson(res, 200, { sessions: manager.list() });
  });

  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_FRAME_BYTES });
  const alive = new WeakMap<WebSocket, boolean>();

  server.on('upgrade', (req, socket, head) => {
    const { rawPath, query } = splitTarget(req.url);
    if (rawPath !== '/terminal') {
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => onConnection(ws, query));
  });

  function refuse(ws: WebSocket, code: number, message: string): void {
    send(ws, { type: 'error', message });
    ws.close(code, message.slice(0, 120));
  }

  function onConnection(ws: WebSocket, query: URLSearchParams): void {
    alive.set(ws, true);
    ws.on('pong', () => alive.set(ws, true));
    ws.on('error', (err) => logger.warn('socket_error', describeError(err)));

    const requested = query.get('session');
    const cols = parseDimensionParam(query.get('cols'));
    const rows = parseDimensionParam(query.get('rows'));
    if (requested !== null && !SESSION_ID_RE.test(requested)) {
      refuse(ws, 1008, 'invalid session id: expected 1-64 characters of [A-Za-z0-9_-]');
      return;
    }
    if (cols === null || rows === null) {
      refuse(ws, 1008, 'invalid cols/rows: expected integers between 1 and 1000');
      return;
    }

    let session: Session | undefined = requested === null ? undefined : manager.get(requested);
    if (session !== undefined) {
      session.attach(ws, cols !== undefined || rows !== undefined ? { cols: cols ?? DEFAULT_COLS, rows: rows ?? DEFAULT_ROWS } : undefined);
    } else {
      try {
        session = manager.create(requested ?? manager.newId(), cols ?? DEFAULT_COLS, rows ?? DEFAULT_ROWS);
      } catch (err) {
        if (err instanceof SessionLimitError) {
          refuse(ws, 1013, err.message);
        } else {
          logger.error('spawn_failed', describeError(err));
          refuse(ws, 1011, 'could not start the shell');
        }
        return;
      }
      session.attach(ws);
    }

    const current = session;
    ws.on('message', (data, isBinary) => {
      if (!current.isAttachedTo(ws)) return;
      if (isBinary) {
        send(ws, { type: 'error', message: 'binary frames are not supported; send JSON text frames' });
        return;
      }
      const parsed = parseClientFrame(rawDataToString(data));
      if (!parsed.ok) {
        send(ws, { type: 'error', message: parsed.message });
        return;
      }
      current.handle(parsed.frame);
    });
    ws.on('close', () => current.detach(ws));
  }

  const pinger = setInterval(() => {
    for (const ws of wss.clients) {
      if (alive.get(ws) === false) {
        ws.terminate();
        continue;
      }
      alive.set(ws, false);
      ws.ping();
    }
  }, opts.pingIntervalMs ?? PING_INTERVAL_MS);
  pinger.unref();

  const port = await listen(server, config.port, config.host, (err) => logger.error('server_error', describeError(err)));
  logger.info('listening', { host: config.host, port, workspace: config.workspaceDir, shell: config.shell });

  return {
    server,
    port,
    async close(): Promise<void> {
      clearInterval(pinger);
      for (const ws of wss.clients) ws.close(1001, 'server shutting down');
      manager.killAll();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      const deadline = Date.now() + 6000;
      while (manager.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
      for (const ws of wss.clients) ws.terminate();
      wss.close();
      await closed;
    },
  };
}
