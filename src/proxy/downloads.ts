// Large downloads relayed in the kernel. A relay in user space costs about as much CPU per byte as
// the guests it serves on a small host (bench: 50 downloads at once reach ~0.9 of direct through
// the agent); joined in an eBPF sockmap, the guest's socket hands its packets straight to the
// client's, and the agent only watches. See HOLD_ABOVE_HEADER in src/guest/contract.ts for the
// handshake that keeps the agent's own head ahead of the first redirected byte.
//
// Every GET of the files API takes this path when the kernel relay is open. Answers the guest does
// not hold (small ones, errors, older guests) are streamed as any other; a held one is joined.
import http from 'node:http';
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { pipeline } from 'node:stream';
import { HELD_HEADER, HOLD_ABOVE_HEADER } from '../guest/contract.ts';
import { ApiError, sendError } from '../http/errors.ts';
import { countingStream, type ProxyTraffic } from './traffic.ts';

/**
 * Joins a guest's socket to a client's so that what the guest sends goes out to the client in the
 * kernel (src/host/kernel-relay.ts implements it with the native sockmap addon).
 */
export interface SocketJoiner {
  /** From now on the guest socket's incoming bytes leave through the client socket, up to `limit`. Returns a handle. */
  join(guestFd: number, clientFd: number, limit: number): number;
  /** The guest may now have sent up to `limit` bytes; past it, its packets are dropped. */
  allow(handle: number, limit: number): void;
  /** Both sockets out of the relay. */
  leave(handle: number): void;
  /** Bytes redirected since the join; negative (-1 - bytes) once the guest sent past its limit. */
  relayed(handle: number): number;
  /** Bytes written into a TCP socket since it connected: acknowledged, or in its send queue. */
  queued(fd: number): number;
}

/** Bodies from this size on are relayed in the kernel; smaller ones are not worth the handshake's round trip. */
export const HOLD_ABOVE_BYTES = 1024 * 1024;
/**
 * What a guest may send ahead of its client. A sockmap does not push back on the sender, so the
 * agent gives the guest credit (contract.ts) as the client takes the bytes, and the kernel drops
 * what a guest sends past it: at most this much of a download waits in the kernel.
 */
export const CREDIT_WINDOW_BYTES = 8 * 1024 * 1024;
/**
 * How often a joined download is looked at, between these bounds: when its guest may run out of
 * credit, and while its last bytes drain into the client's socket. A guest that ends is seen at once.
 */
const LOOK_MIN_MS = 5;
const LOOK_MAX_MS = 1000;
const CREDIT_LOOK_MAX_MS = 200;
/** A download whose guest and client have both not moved for this long is given up. */
const STALLED_MS = 120_000;
const ANSWER_TIMEOUT_MS = 30_000;

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
  'content-length',
  // The agent's token is not the guest's.
  'authorization',
  'expect',
]);

// A pool per agent process, as reply-from's. A held download's connection goes back to it once
// the guest has sent the whole body (contract.ts), as any other's. With a timeout set, Node closes
// an idle connection a second before the guest's announced keep-alive ends (5 s), not after.
const guestConnections = new http.Agent({ keepAlive: true, maxSockets: 16, keepAliveMsecs: 1000, timeout: 60_000 });

export interface DownloadTarget {
  readonly host: string;
  readonly port: number;
  /** Path and query as sent to the guest. */
  readonly path: string;
  /** For log lines: workshop.seat. */
  readonly vm: string;
}

interface WithFd {
  readonly _handle?: { readonly fd?: unknown } | null;
}

function fdOf(socket: Socket | null | undefined): number | undefined {
  const fd = (socket as WithFd | null | undefined)?._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

function forwardedHeaders(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const kept: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers)) if (value !== undefined && !HOP_BY_HOP.has(name)) kept[name] = value;
  return kept;
}

/** A GET the kernel relay may carry: no body of its own (its body is the handshake's). */
export function joinable(request: FastifyRequest): boolean {
  const length = request.headers['content-length'];
  return request.method === 'GET' && request.headers['transfer-encoding'] === undefined && (length === undefined || length === '0');
}

/** The body's length when the guest held its answer (contract.ts); undefined for any other answer. */
function heldLength(answer: IncomingMessage): number | undefined {
  const held = answer.headers[HELD_HEADER];
  if (typeof held !== 'string' || !/^\d{1,15}$/.test(held) || answer.headers['content-length'] !== '0') return undefined;
  return answer.statusCode === 200 || answer.statusCode === 206 ? Number(held) : undefined;
}

/** What a failed request to the guest says about a kept connection the guest had closed meanwhile. */
function staleConnection(guestRequest: http.ClientRequest, error: Error): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return guestRequest.reusedSocket && (code === 'ECONNRESET' || code === 'EPIPE');
}

/**
 * One GET to the guest's file server: `answered` gets its answer, `failed` the error. A kept
 * connection that the guest closed while idle is the pool's race, not the guest's fault: the GET
 * is sent once more on a new one.
 */
function askGuest(
  request: FastifyRequest,
  target: DownloadTarget,
  hold: boolean,
  answered: (answer: IncomingMessage, guestRequest: http.ClientRequest) => void,
  failed: (error: Error) => void,
  retried = false,
): void {
  const guestRequest = http.request({
    host: target.host,
    port: target.port,
    path: target.path,
    method: 'GET',
    agent: guestConnections,
    headers: {
      ...forwardedHeaders(request.headers),
      host: `${target.host}:${target.port}`,
      ...(hold ? { [HOLD_ABOVE_HEADER]: String(HOLD_ABOVE_BYTES), 'transfer-encoding': 'chunked' } : {}),
    },
  });
  let settled = false;
  const answerTimer = setTimeout(() => guestRequest.destroy(new Error(`no answer in ${ANSWER_TIMEOUT_MS / 1000} s`)), ANSWER_TIMEOUT_MS);
  const clientGone = (): void => {
    if (!settled) guestRequest.destroy();
  };
  request.raw.socket.once('close', clientGone);
  const settle = (): boolean => {
    if (settled) return false;
    settled = true;
    clearTimeout(answerTimer);
    request.raw.socket.removeListener('close', clientGone);
    return true;
  };
  guestRequest.on('error', (error) => {
    if (!settle()) return;
    if (!retried && !request.raw.socket.destroyed && staleConnection(guestRequest, error)) {
      askGuest(request, target, hold, answered, failed, true);
    } else failed(error);
  });
  guestRequest.on('response', (answer) => {
    if (settle()) answered(answer, guestRequest);
  });
  if (hold) guestRequest.flushHeaders();
  else guestRequest.end();
}

/**
 * Sends one GET to the guest's file server and its answer to the client: joined in the kernel when
 * the guest holds it, streamed through the agent otherwise.
 */
export async function relayDownload(
  request: FastifyRequest,
  reply: FastifyReply,
  target: DownloadTarget,
  joiner: SocketJoiner,
  traffic: ProxyTraffic,
  answerHeaders: (headers: IncomingHttpHeaders) => IncomingHttpHeaders,
): Promise<FastifyReply> {
  await ownSocket(request, reply);
  if (request.raw.socket.destroyed) return reply; // the client left while its answer waited its turn
  // Settled with the reply once it is under way: Fastify then sends nothing of its own.
  return new Promise<FastifyReply>((resolve) => {
    const unreachable = (error: Error): void => {
      request.log.warn({ err: error, vm: target.vm }, 'file server unreachable');
      sendError(
        reply,
        new ApiError(502, 'guest_unreachable', `the seat's file server at ${target.host}:${target.port} did not answer (${error.message})`),
      );
      resolve(reply);
    };
    const stream = (answer: IncomingMessage): void => {
      const counted = countingStream((bytes) => traffic.transferred('files', 'from_guest', bytes));
      reply
        .code(answer.statusCode ?? 502)
        .headers(answerHeaders(answer.headers))
        .send(pipeline(answer, counted, () => undefined));
      resolve(reply);
    };
    askGuest(
      request,
      target,
      true,
      (answer, guestRequest) => {
        const length = heldLength(answer);
        if (length === undefined) {
          guestRequest.end(); // the handshake's body
          stream(answer);
          return;
        }
        answer.resume(); // its framing's empty body: the connection goes back to the pool once the request ends too
        const handle = joinSockets(request, reply, answer, joiner, target);
        if (handle === undefined) {
          // The held body would come outside HTTP's framing: this connection is given up, and the
          // file asked for again without the handshake, streamed through the agent.
          guestRequest.destroy();
          askGuest(request, target, false, stream, unreachable);
          return;
        }
        reply.hijack();
        const joined = new JoinedDownload(request, reply.raw, guestRequest, joiner, traffic, target, handle, length);
        const head = headOf({ ...reply.getHeaders(), ...answerHeaders(answer.headers), 'content-length': String(length) });
        joined.start(answer.statusCode ?? 200, head).finally(() => resolve(reply));
      },
      unreachable,
    );
  });
}

/** The joined download a client connection carries, if any. */
const joinedOn = new WeakMap<Socket, JoinedDownload>();

/**
 * Waits until this answer has the client's connection: Node answers a connection's requests in
 * turn, and only the answer being written may join its socket. A client sends its next request
 * as soon as it has a body, while its joined download ends at the agent's next look: made now.
 */
async function ownSocket(request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const response = reply.raw;
  const socket = request.raw.socket;
  if (response.socket !== null || socket.destroyed) return;
  await new Promise<void>((resolve) => {
    // A queued answer hears nothing when its connection closes: the socket does.
    const done = (): void => {
      response.off('socket', done);
      socket.off('close', done);
      resolve();
    };
    response.on('socket', done);
    socket.on('close', done);
    joinedOn.get(socket)?.lookNow();
  });
}

/** The guest's socket joined to the client's, nothing allowed through yet; undefined where they cannot be. */
function joinSockets(
  request: FastifyRequest,
  reply: FastifyReply,
  answer: IncomingMessage,
  joiner: SocketJoiner,
  target: DownloadTarget,
): number | undefined {
  // A pipelined request's answer waits for the one before it: its socket is not its own yet.
  if (reply.raw.socket !== request.raw.socket) return undefined;
  const guestFd = fdOf(answer.socket);
  const clientFd = fdOf(request.raw.socket);
  if (guestFd === undefined || clientFd === undefined) return undefined;
  try {
    return joiner.join(guestFd, clientFd, 0);
  } catch (error) {
    request.log.warn({ err: error, vm: target.vm }, 'download not joined in the kernel; relayed by the agent');
    return undefined;
  }
}

/** Headers without the unset ones, as writeHead takes them. */
function headOf(headers: Record<string, string | number | readonly string[] | string[] | undefined>): OutgoingHttpHeaders {
  const head: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) if (value !== undefined) head[name] = typeof value === 'object' ? [...value] : value;
  return head;
}

/**
 * One held download, its sockets joined: the head from the agent, the body from the kernel, paced
 * by credit. Once the client has it all, both connections are kept for their next requests.
 */
class JoinedDownload {
  private clientFd = -1;
  private base = 0;
  private relayedBytes = 0;
  private onClient = 0;
  private credit = 0;
  private done = false;
  private watcher: NodeJS.Timeout | undefined;
  private lastLook = { at: 0, onClient: 0 };
  private lastMove = 0;
  private idleDelay = LOOK_MIN_MS;
  private finished: () => void = () => undefined;
  private readonly guestSocket: Socket;
  private readonly clientSocket: Socket;
  private readonly look = (): void => this.check();
  private readonly clientClosed = (): void => this.finish(false);

  constructor(
    private readonly request: FastifyRequest,
    private readonly response: ServerResponse,
    private readonly guestRequest: http.ClientRequest,
    private readonly joiner: SocketJoiner,
    private readonly traffic: ProxyTraffic,
    private readonly target: DownloadTarget,
    private readonly handle: number,
    private readonly length: number,
  ) {
    this.guestSocket = guestRequest.socket as Socket;
    this.clientSocket = request.raw.socket;
  }

  async start(status: number, headers: OutgoingHttpHeaders): Promise<void> {
    const ended = new Promise<void>((resolve) => (this.finished = resolve));
    joinedOn.set(this.clientSocket, this);
    this.guestSocket.setTimeout(0); // idle in user space while the kernel carries its bytes
    this.guestRequest.on('error', this.look); // a guest gone is seen by the look
    this.guestSocket.on('end', this.look);
    this.guestSocket.on('close', this.look);
    this.clientSocket.on('close', this.clientClosed);
    this.response.writeHead(status, headers);
    this.response.flushHeaders();
    const written = await headWritten(this.clientSocket, STALLED_MS);
    // Read again after the wait: a socket closed meanwhile may have handed its number on.
    const clientFd = fdOf(this.clientSocket);
    if (!written || this.done || this.guestSocket.destroyed || this.clientSocket.destroyed || clientFd === undefined) {
      this.finish(false);
      return ended;
    }
    this.clientFd = clientFd;
    this.credit = Math.min(this.length, CREDIT_WINDOW_BYTES);
    try {
      this.base = this.joiner.queued(clientFd);
      this.joiner.allow(this.handle, this.credit); // before the guest hears of it
    } catch (error) {
      this.request.log.warn({ err: error, vm: this.target.vm }, 'download not relayed in the kernel');
      this.finish(false);
      return ended;
    }
    this.giveCredit();
    this.lastLook = { at: performance.now(), onClient: 0 };
    this.lastMove = Date.now();
    this.watcher = setTimeout(this.look, LOOK_MIN_MS);
    return ended;
  }

  /** The client asked for more on this connection: it likely has the whole body. */
  lookNow(): void {
    this.check();
  }

  /** The release, and each later credit: a line with the most the guest may have sent. */
  private giveCredit(): void {
    this.guestRequest.write(`${this.credit}\n`);
  }

  private check(): void {
    if (this.done) return;
    clearTimeout(this.watcher);
    let relayed: number;
    let onClient: number;
    try {
      relayed = this.joiner.relayed(this.handle);
      onClient = this.joiner.queued(this.clientFd) - this.base;
    } catch {
      return this.finish(false); // the client socket is gone
    }
    if (relayed < 0) {
      this.relayedBytes = -1 - relayed;
      this.request.log.warn({ vm: this.target.vm, credit: this.credit }, 'the guest sent past its credit: download ended');
      return this.finish(false);
    }
    if (relayed !== this.relayedBytes || onClient !== this.onClient) this.lastMove = Date.now();
    this.relayedBytes = relayed;
    this.onClient = onClient;
    const waiting = relayed - onClient;
    if (waiting <= 0) {
      if (relayed >= this.length) return this.finish(true);
      if (this.guestSocket.destroyed || this.guestSocket.readableEnded) return this.finish(false); // the guest ended early
    }
    if (Date.now() - this.lastMove > STALLED_MS) {
      this.request.log.warn({ vm: this.target.vm, relayed, on_client: onClient }, 'download stalled: ended');
      return this.finish(false);
    }
    // More credit once the client has taken half of what the guest may send ahead of it.
    if (this.credit < this.length && onClient + CREDIT_WINDOW_BYTES >= this.credit + CREDIT_WINDOW_BYTES / 2) {
      this.credit = Math.min(this.length, onClient + CREDIT_WINDOW_BYTES);
      try {
        this.joiner.allow(this.handle, this.credit); // before the guest hears of it
      } catch {
        return this.finish(false);
      }
      this.giveCredit();
    }
    this.lookAgain();
  }

  /**
   * When the next look is worth its system calls (fifty downloads looked at every 20 ms cost the
   * agent a third of what relaying them in user space did), from the client's pace since the last:
   * while credit is short, about when the client has taken enough for more (at most 200 ms on);
   * with all credit given, about when the client has the whole body. The guest keeps its
   * connection after the body, so only a look sees the end, and the answer ends with it: the
   * client's next request on this connection waits for that.
   */
  private lookAgain(): void {
    const now = performance.now();
    const elapsed = Math.max(1, now - this.lastLook.at);
    const clientPerMs = (this.onClient - this.lastLook.onClient) / elapsed;
    this.lastLook = { at: now, onClient: this.onClient };
    // Nothing moved: looks back off from LOOK_MIN_MS, doubling.
    this.idleDelay = clientPerMs > 0 ? LOOK_MIN_MS : Math.min(LOOK_MAX_MS, this.idleDelay * 2);
    let delay = this.idleDelay;
    if (clientPerMs > 0 && this.credit >= this.length) delay = (this.length - this.onClient) / clientPerMs;
    else if (clientPerMs > 0) delay = Math.min(CREDIT_LOOK_MAX_MS, (this.credit - CREDIT_WINDOW_BYTES / 2 - this.onClient) / clientPerMs);
    this.watcher = setTimeout(this.look, Math.min(LOOK_MAX_MS, Math.max(LOOK_MIN_MS, delay)));
  }

  private finish(complete: boolean): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.watcher);
    this.guestRequest.off('error', this.look);
    this.guestSocket.off('end', this.look);
    this.guestSocket.off('close', this.look);
    this.clientSocket.off('close', this.clientClosed);
    if (joinedOn.get(this.clientSocket) === this) joinedOn.delete(this.clientSocket);
    try {
      const relayed = this.joiner.relayed(this.handle); // a client that has it all may close before the last look
      this.relayedBytes = relayed < 0 ? -1 - relayed : relayed;
      if (relayed < 0) complete = false;
    } catch {
      // the counter is gone only with the join
    }
    this.joiner.leave(this.handle);
    this.traffic.transferred('files', 'from_guest', this.relayedBytes);
    if (complete) {
      // Every byte is in the client's socket and the guest has sent no more than the body: both
      // connections are as after any answer. The request's end frees the guest's for the pool.
      this.response.end();
      this.guestRequest.end();
    } else {
      this.guestRequest.destroy();
      this.response.destroy();
    }
    this.request.log.info(
      {
        vm: this.target.vm,
        bytes: this.relayedBytes,
        in_kernel: true,
        whole: this.relayedBytes >= this.length,
        statusCode: this.response.statusCode,
      },
      'download relayed',
    );
    this.finished();
  }
}

/**
 * Whether what was written to the socket reached the kernel (false: the socket closed, or not in
 * `timeoutMs`). Looked at, not waited on: a small write that libuv could not finish at once leaves
 * bytes queued without a 'drain' to come.
 */
function headWritten(socket: Socket, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve) => {
    const look = (): void => {
      if (socket.destroyed) resolve(false);
      else if (socket.writableLength === 0) resolve(true);
      else if (Date.now() > deadline) resolve(false);
      else setTimeout(look, LOOK_MIN_MS);
    };
    setImmediate(look);
  });
}
