// The seat's terminal WebSocket through the server: /proxy/{ws}/{seat}/terminal is checked as the
// HTTP proxy is (learner or instructor cookie, and a same-origin browser), then joined to the
// agent's terminal on the owning worker with the worker's token. Frames pass both ways unchanged;
// close codes are carried through. The seat counts as connected while a terminal is open, and
// its last activity is refreshed meanwhile: the idle stop asks only that, since a server process
// that dies never takes its terminals off the count.
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import WebSocket, { WebSocketServer, type RawData } from 'ws';
import { writeErrorToSocket, writeRawError } from '../http/errors.ts';
import { REQUEST_ID_HEADER, requestIdFrom } from '../http/request-id.ts';
import { fromDomain } from './errors.ts';
import type { ServerContext } from './context.ts';
import { activityRecorder, seatAccess } from './seat-access.ts';

const TERMINAL_PATH = /^\/proxy\/(ws-[a-z0-9]{10})\/([0-9]{1,6})\/terminal\/?$/;

function sendableCode(code: number): number {
  if (code === 1005) return 1000;
  if (code === 1006 || code === 1015) return 1011;
  return code;
}

/** A browser's Origin must be this server: another site's page may not open a learner's terminal. */
function sameOrigin(request: IncomingMessage): boolean {
  const origin = request.headers.origin;
  if (origin === undefined) return true; // not a browser (CLI, tests)
  try {
    return new URL(origin).host === request.headers.host;
  } catch {
    return false;
  }
}

export interface TerminalProxy {
  handle(request: IncomingMessage, socket: Duplex, head: Buffer): void;
  close(): void;
}

/**
 * How often an open terminal refreshes its seat's last activity: about twice within the shortest
 * idle timeout a workshop may have (60 s), so a seat with a terminal open is never found idle.
 */
export const TERMINAL_ACTIVITY_INTERVAL_MS = 30_000;

export function createTerminalProxy(
  c: ServerContext,
  parseCookie: (header: string) => Record<string, string | undefined>,
  activityIntervalMs = TERMINAL_ACTIVITY_INTERVAL_MS,
): TerminalProxy {
  const server = new WebSocketServer({ noServer: true, maxPayload: 1024 * 1024 });
  /** Each open client with the timer refreshing its seat's activity. */
  const open = new Map<WebSocket, NodeJS.Timeout>();
  const recordActivity = activityRecorder(c);
  const refuse = (socket: Duplex, requestId: string, error: unknown): void =>
    writeErrorToSocket(socket, fromDomain(error), { requestId, observe: (status, code) => c.metrics.errors.inc({ status, code }) });

  const handle = async (request: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> => {
    const requestId = requestIdFrom(request.headers[REQUEST_ID_HEADER]);
    const url = new URL(request.url ?? '/', 'http://server');
    const match = TERMINAL_PATH.exec(url.pathname);
    if (!match) return writeRawError(socket, 404, 'not_found', `no WebSocket at ${url.pathname}`, { requestId });
    if (!sameOrigin(request)) return writeRawError(socket, 403, 'forbidden_origin', 'the page is not on this server', { requestId });
    const workshopId = match[1] ?? '';
    const seatId = Number(match[2]);
    let access;
    try {
      access = await seatAccess(c, parseCookie(request.headers.cookie ?? ''), workshopId, seatId);
    } catch (error) {
      return refuse(socket, requestId, error);
    }
    const { worker } = access.placed;
    const target = new URL(`${worker.url}/proxy/${workshopId}/${seatId}/terminal`);
    target.protocol = target.protocol === 'https:' ? 'wss:' : 'ws:';
    for (const [name, value] of url.searchParams) if (name !== 'token') target.searchParams.append(name, value);
    const upstream = new WebSocket(target, {
      headers: { ...(worker.token === null ? {} : { authorization: `Bearer ${worker.token}` }), [REQUEST_ID_HEADER]: requestId },
      handshakeTimeout: 10_000,
    });
    let joined = false;
    upstream.once('unexpected-response', (_req, response) => {
      const status = response.statusCode === 404 ? 404 : 502;
      writeRawError(
        socket,
        status,
        status === 404 ? 'seat_not_found' : 'worker_refused',
        `the worker answered ${response.statusCode ?? '?'}`,
        { requestId },
      );
      upstream.terminate();
    });
    upstream.on('error', () => {
      if (!joined) writeRawError(socket, 502, 'worker_unreachable', `the seat's worker ${worker.id} did not answer`, { requestId });
    });
    upstream.once('open', () => {
      joined = true;
      server.handleUpgrade(request, socket, head, (client) => {
        const refresh = setInterval(
          () => void c.repo.recordActivity(workshopId, seatId, c.clock.now()).catch(() => undefined),
          activityIntervalMs,
        );
        refresh.unref();
        open.set(client, refresh);
        c.metrics.proxied.inc({ kind: 'terminal' });
        void c.repo.changeConnections(workshopId, seatId, 1, c.clock.now()).catch(() => undefined);
        client.on('message', (data: RawData, isBinary: boolean) => {
          recordActivity(workshopId, seatId);
          if (upstream.readyState === WebSocket.OPEN) upstream.send(data, { binary: isBinary });
        });
        upstream.on('message', (data: RawData, isBinary: boolean) => {
          if (client.readyState === WebSocket.OPEN) client.send(data, { binary: isBinary });
        });
        upstream.on('close', (code, reason) => {
          if (client.readyState === WebSocket.OPEN) client.close(sendableCode(code), reason);
        });
        upstream.on('error', () => client.readyState === WebSocket.OPEN && client.close(1011, 'worker terminal failed'));
        client.on('close', (code, reason) => {
          clearInterval(refresh);
          open.delete(client);
          void c.repo.changeConnections(workshopId, seatId, -1, c.clock.now()).catch(() => undefined);
          if (upstream.readyState === WebSocket.OPEN) upstream.close(sendableCode(code), reason);
          else upstream.terminate();
        });
        client.on('error', () => upstream.terminate());
      });
    });
  };

  return {
    handle: (request, socket, head) => {
      socket.on('error', () => socket.destroy());
      handle(request, socket, head).catch((error: unknown) => writeErrorToSocket(socket, error));
    },
    close: () => {
      for (const [client, refresh] of open) {
        clearInterval(refresh);
        client.terminate();
      }
      server.close();
    },
  };
}
