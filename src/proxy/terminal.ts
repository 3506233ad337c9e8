// WebSocket proxy from the browser to the guest's terminal server: frames both ways with
// back-pressure, keep-alive pings, close codes carried through, 1011 when the guest is unreachable.
import type { IncomingMessage } from 'node:http';
import { connect as tcpConnect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { TERMINAL_PORT } from './guest.ts';
import { untracked, type ProxyTraffic } from './traffic.ts';

const HIGH_WATER = 1024 * 1024;
const LOW_WATER = 256 * 1024;
const PING_INTERVAL_MS = 30_000;
/** A guest that does not take the TCP connection in this long is unreachable. */
const CONNECT_TIMEOUT_MS = 5_000;
/**
 * Once connected, the guest may take a while to answer the upgrade: an emulated guest starting
 * many shells at once (a class joining) answers the later ones after several seconds.
 */
const HANDSHAKE_TIMEOUT_MS = 60_000;

/** A TCP connection to the guest that fails after CONNECT_TIMEOUT_MS without an answer. */
function connectGuest(ip: string): Socket {
  const socket = tcpConnect({ host: ip, port: TERMINAL_PORT });
  socket.setTimeout(CONNECT_TIMEOUT_MS, () => socket.destroy(new Error(`no answer from ${ip}:${TERMINAL_PORT}`)));
  socket.once('connect', () => socket.setTimeout(0));
  return socket;
}

/** Close codes that may not be sent on the wire are replaced by a sendable one. */
function sendableCode(code: number): number {
  if (code === 1005) return 1000;
  if (code === 1006 || code === 1015) return 1011;
  return code;
}

/** Sockets paused for back-pressure: their pongs cannot be read, so they count as alive. */
const pausedForBackPressure = new WeakSet<WebSocket>();

/**
 * Forwards frames from `from` to `to`, pausing `from` while `to` has too much unsent data.
 * ws's send callback fires once a frame is handed to the kernel, which tracks what is still queued.
 */
function pipeFrames(from: WebSocket, to: WebSocket, count: (bytes: number) => void): void {
  let queued = 0;
  let paused = false;
  from.on('message', (data: RawData, isBinary: boolean) => {
    if (to.readyState !== WebSocket.OPEN) return;
    const size = Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : (data as Buffer).byteLength;
    queued += size;
    count(size);
    to.send(data, { binary: isBinary }, () => {
      queued -= size;
      if (paused && queued < LOW_WATER) {
        paused = false;
        pausedForBackPressure.delete(from);
        from.resume();
      }
    });
    if (!paused && queued > HIGH_WATER) {
      paused = true;
      pausedForBackPressure.add(from);
      from.pause();
    }
  });
}

function keepAlive(socket: WebSocket): () => void {
  let alive = true;
  socket.on('pong', () => (alive = true));
  const timer = setInterval(() => {
    if (pausedForBackPressure.has(socket)) alive = true;
    if (!alive) {
      socket.terminate();
      return;
    }
    alive = false;
    socket.ping();
  }, PING_INTERVAL_MS);
  timer.unref();
  return () => clearInterval(timer);
}

export class TerminalProxy {
  private readonly server = new WebSocketServer({ noServer: true, maxPayload: 16 * 1024 * 1024 });
  private readonly requestIds = new WeakMap<IncomingMessage, string>();

  constructor(private readonly traffic: ProxyTraffic = untracked) {
    // The 101 answer carries the request id too, as every HTTP answer does.
    this.server.on('headers', (headers, request) => {
      const id = this.requestIds.get(request);
      if (id !== undefined) headers.push(`x-request-id: ${id}`);
    });
  }

  /** Completes the client's upgrade and connects it to the guest at `ip`. */
  handle(request: IncomingMessage, socket: Duplex, head: Buffer, ip: string, query: URLSearchParams, requestId: string): void {
    this.requestIds.set(request, requestId);
    this.server.handleUpgrade(request, socket, head, (client) => {
      this.traffic.connected('terminal');
      this.connect(client, ip, query);
    });
  }

  private connect(client: WebSocket, ip: string, query: URLSearchParams): void {
    const search = query.toString();
    const upstream = new WebSocket(`ws://${ip}:${TERMINAL_PORT}/terminal${search ? `?${search}` : ''}`, {
      createConnection: () => connectGuest(ip),
      handshakeTimeout: HANDSHAKE_TIMEOUT_MS,
      maxPayload: 16 * 1024 * 1024,
    });
    // Until the guest answers, hold the client's frames (pausing it keeps them in the kernel buffer).
    client.pause();
    const stopPings = [keepAlive(client)];
    let opened = false;

    upstream.on('open', () => {
      opened = true;
      stopPings.push(keepAlive(upstream));
      pipeFrames(upstream, client, (bytes) => this.traffic.transferred('terminal', 'from_guest', bytes));
      pipeFrames(client, upstream, (bytes) => this.traffic.transferred('terminal', 'to_guest', bytes));
      client.resume();
    });
    upstream.on('error', () => {
      if (!opened && client.readyState === WebSocket.OPEN) client.close(1011, 'guest terminal unreachable');
    });
    upstream.on('close', (code, reason) => {
      stopPings.forEach((stop) => stop());
      if (client.readyState === WebSocket.OPEN) {
        client.close(opened ? sendableCode(code) : 1011, opened ? reason : 'guest terminal unreachable');
      }
    });
    client.on('close', (code, reason) => {
      stopPings.forEach((stop) => stop());
      if (upstream.readyState === WebSocket.OPEN) upstream.close(sendableCode(code), reason);
      else upstream.terminate();
    });
    client.on('error', () => upstream.terminate());
  }

  close(): void {
    for (const client of this.server.clients) client.terminate();
    this.server.close();
  }
}
