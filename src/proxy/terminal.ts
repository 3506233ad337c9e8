// WebSocket proxy from the browser to the guest's terminal server. The handshake goes on to the
// guest, then the bytes are tunnelled both ways untouched (back-pressure, close codes and the
// guest's pings end to end); a guest that does not answer 101 gets the client closed with 1011.
// A handshake the tunnel cannot pass on is upgraded here and relayed frame by frame (keep-alive pings).
import { createHash } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { connect as tcpConnect, Socket } from 'node:net';
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

/** A handshake the tunnel can pass on: GET, `Upgrade: websocket`, version 13 and a 16-byte key. */
function isPlainHandshake(request: IncomingMessage): boolean {
  const key = request.headers['sec-websocket-key'];
  return (
    request.method === 'GET' &&
    request.headers.upgrade?.toLowerCase() === 'websocket' &&
    request.headers['sec-websocket-version'] === '13' &&
    typeof key === 'string' &&
    /^[+/0-9A-Za-z]{22}==$/.test(key)
  );
}

/** The client's handshake as the guest gets it: its key, protocols and extensions; no credentials. */
function handshakeFor(request: IncomingMessage, ip: string, target: string): string {
  const lines = [
    `GET ${target} HTTP/1.1`,
    `Host: ${ip}:${TERMINAL_PORT}`,
    'Upgrade: websocket',
    'Connection: Upgrade',
    `Sec-WebSocket-Key: ${request.headers['sec-websocket-key'] ?? ''}`,
    'Sec-WebSocket-Version: 13',
  ];
  for (const name of ['sec-websocket-protocol', 'sec-websocket-extensions'] as const) {
    const value = request.headers[name];
    if (typeof value === 'string' && !/[\r\n]/.test(value)) lines.push(`${name}: ${value}`);
  }
  return `${lines.join('\r\n')}\r\n\r\n`;
}

const WEBSOCKET_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/**
 * The 101 the client gets, without its blank line, when the guest's answer switched protocols
 * for this client's key; undefined otherwise. Built here, not copied: a guest is the learner's,
 * and only the accept, a subprotocol the client offered and the extensions go on to the browser.
 */
function acceptedSwitch(head: string, request: IncomingMessage): string | undefined {
  const [status = '', ...lines] = head.split('\r\n');
  if (!/^HTTP\/1\.1 101 /.test(status)) return undefined;
  const headers = new Map(
    lines.map((line) => {
      const colon = line.indexOf(':');
      return [line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()] as const;
    }),
  );
  const accept = createHash('sha1')
    .update(`${request.headers['sec-websocket-key'] ?? ''}${WEBSOCKET_GUID}`)
    .digest('base64');
  if (headers.get('sec-websocket-accept') !== accept) return undefined;
  const offered = String(request.headers['sec-websocket-protocol'] ?? '')
    .split(',')
    .map((p) => p.trim());
  const protocol = headers.get('sec-websocket-protocol');
  if (protocol !== undefined && !offered.includes(protocol)) return undefined;
  const extensions = headers.get('sec-websocket-extensions');
  return [
    'HTTP/1.1 101 Switching Protocols',
    'Upgrade: websocket',
    'Connection: Upgrade',
    `Sec-WebSocket-Accept: ${accept}`,
    ...(protocol === undefined ? [] : [`Sec-WebSocket-Protocol: ${protocol}`]),
    ...(extensions === undefined ? [] : [`Sec-WebSocket-Extensions: ${extensions}`]),
    '',
  ].join('\r\n');
}

const MAX_RESPONSE_HEAD = 16 * 1024;
/** How long a side whose peer is gone may take to flush and close. */
const CLOSE_GRACE_MS = 5_000;

/**
 * The guest's answer up to its blank line (without it), and what came after; undefined if the
 * connection failed, ended, sent too much, or took longer than `timeoutMs`.
 */
function readResponseHead(guest: Socket, timeoutMs: number): Promise<{ head: string; rest: Buffer } | undefined> {
  return new Promise((resolve) => {
    let received = Buffer.alloc(0);
    const done = (answer: { head: string; rest: Buffer } | undefined): void => {
      clearTimeout(timer);
      guest.off('data', onData);
      guest.off('error', onFailure);
      guest.off('close', onFailure);
      if (answer) guest.pause();
      resolve(answer);
    };
    const onFailure = (): void => done(undefined);
    const onData = (chunk: Buffer): void => {
      received = Buffer.concat([received, chunk]);
      const end = received.indexOf('\r\n\r\n');
      if (end >= 0) done({ head: received.subarray(0, end).toString('latin1'), rest: received.subarray(end + 4) });
      else if (received.length > MAX_RESPONSE_HEAD) done(undefined);
    };
    const timer = setTimeout(onFailure, timeoutMs);
    guest.on('data', onData);
    guest.once('error', onFailure);
    guest.once('close', onFailure);
  });
}

/** Bytes both ways with back-pressure, counted; either side closing or failing ends both. */
function tunnel(client: Socket, guest: Socket, traffic: ProxyTraffic): void {
  // Liveness is end to end now (the guest pings its clients); keepalive finds a vanished peer.
  for (const socket of [client, guest]) {
    socket.setNoDelay(true);
    socket.setKeepAlive(true, PING_INTERVAL_MS);
  }
  client.on('data', (chunk: Buffer) => traffic.transferred('terminal', 'to_guest', chunk.length));
  guest.on('data', (chunk: Buffer) => traffic.transferred('terminal', 'from_guest', chunk.length));
  client.pipe(guest);
  guest.pipe(client);
  guest.resume();
  const fail = (): void => {
    client.destroy();
    guest.destroy();
  };
  client.once('error', fail);
  guest.once('error', fail);
  // One side gone: the other gets what was already on its way (a close frame), then its end.
  for (const [gone, other] of [
    [client, guest],
    [guest, client],
  ] as const) {
    gone.once('close', () => {
      other.end();
      setTimeout(() => other.destroy(), CLOSE_GRACE_MS).unref();
    });
  }
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

  /**
   * Connects the client's upgrade to the guest at `ip`. A well-formed handshake goes on to the
   * guest and the bytes are tunnelled both ways once it answers 101, frames untouched (parsing
   * and re-masking each one cost ~5 ms per keystroke with 50 shells typing at once). If the guest
   * does not answer 101, the client is upgraded here and closed with 1011. A handshake the tunnel
   * cannot pass on is upgraded here and relayed frame by frame.
   */
  handle(request: IncomingMessage, socket: Duplex, head: Buffer, ip: string, query: URLSearchParams, requestId: string): void {
    this.requestIds.set(request, requestId);
    if (!(socket instanceof Socket) || !isPlainHandshake(request)) {
      this.server.handleUpgrade(request, socket, head, (client) => {
        this.traffic.connected('terminal');
        this.connect(client, ip, query);
      });
      return;
    }
    const search = query.toString();
    const guest = connectGuest(ip);
    guest.once('connect', () => guest.write(handshakeFor(request, ip, `/terminal${search ? `?${search}` : ''}`)));
    void readResponseHead(guest, HANDSHAKE_TIMEOUT_MS).then((answer) => {
      if (socket.destroyed) {
        guest.destroy();
        return;
      }
      const switching = answer && acceptedSwitch(answer.head, request);
      if (!answer || !switching) {
        guest.destroy();
        this.server.handleUpgrade(request, socket, head, (client) => {
          this.traffic.connected('terminal');
          client.close(1011, 'guest terminal unreachable');
        });
        return;
      }
      this.traffic.connected('terminal');
      socket.write(`${switching}x-request-id: ${requestId}\r\n\r\n`);
      if (answer.rest.length > 0) socket.write(answer.rest);
      if (head.length > 0) guest.write(head);
      tunnel(socket, guest, this.traffic);
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
