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

/** Bodies from this size on are relayed in the kernel; smaller ones are not worth a connection of their own. */
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

// A pool per agent process, as reply-from's: a joined connection is closed after its download.
const guestConnections = new http.Agent({ keepAlive: true, maxSockets: 16, keepAliveMsecs: 1000 });

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

/**
 * Sends one GET to the guest's file server and its answer to the client: joined in the kernel when
 * the guest holds it, streamed through the agent otherwise.
 */
export function relayDownload(
  request: FastifyRequest,
  reply: FastifyReply,
  target: DownloadTarget,
  joiner: SocketJoiner,
  traffic: ProxyTraffic,
  answerHeaders: (headers: IncomingHttpHeaders) => IncomingHttpHeaders,
): Promise<void> {
  return new Promise<void>((resolve) => {
    const guestRequest = http.request({
      host: target.host,
      port: target.port,
      path: target.path,
      method: 'GET',
      agent: guestConnections,
      headers: {
        ...forwardedHeaders(request.headers),
        host: `${target.host}:${target.port}`,
        [HOLD_ABOVE_HEADER]: String(HOLD_ABOVE_BYTES),
        'transfer-encoding': 'chunked',
      },
    });
    let answered = false;
    const answerTimer = setTimeout(() => guestRequest.destroy(new Error(`no answer in ${ANSWER_TIMEOUT_MS / 1000} s`)), ANSWER_TIMEOUT_MS);
    const clientGone = (): void => {
      if (!answered) guestRequest.destroy();
    };
    request.raw.socket.once('close', clientGone);
    guestRequest.on('error', (error) => {
      clearTimeout(answerTimer);
      request.raw.socket.removeListener('close', clientGone);
      if (answered) return;
      answered = true;
      request.log.warn({ err: error, vm: target.vm }, 'file server unreachable');
      sendError(
        reply,
        new ApiError(502, 'guest_unreachable', `the seat's file server at ${target.host}:${target.port} did not answer (${error.message})`),
      );
      resolve();
    });
    guestRequest.on('response', (answer) => {
      clearTimeout(answerTimer);
      answered = true;
      request.raw.socket.removeListener('close', clientGone);
      const length = Number(answer.headers['content-length']);
      const held =
        answer.headers[HELD_HEADER] === '1' && (answer.statusCode === 200 || answer.statusCode === 206) && Number.isSafeInteger(length);
      // A pipelined request's answer waits for the one before it: its socket is not its own yet.
      const ownsSocket = reply.raw.socket === request.raw.socket;
      if (!held || !ownsSocket || fdOf(answer.socket) === undefined || fdOf(request.raw.socket) === undefined) {
        guestRequest.end(); // the handshake's body: a held answer (no socket to join) goes on as well
        const counted = countingStream((bytes) => traffic.transferred('files', 'from_guest', bytes));
        reply
          .code(answer.statusCode ?? 502)
          .headers(answerHeaders(answer.headers))
          .send(pipeline(answer, counted, () => undefined));
        resolve();
        return;
      }
      reply.hijack();
      const joined = new JoinedDownload(request, reply.raw, answer, guestRequest, joiner, traffic, target, length);
      joined
        .start(answer.statusCode ?? 200, headOf({ ...reply.getHeaders(), ...answerHeaders(answer.headers), connection: 'close' }))
        .finally(resolve);
    });
    guestRequest.flushHeaders();
  });
}

/** Headers without the unset ones, as writeHead takes them. */
function headOf(headers: Record<string, string | number | readonly string[] | string[] | undefined>): OutgoingHttpHeaders {
  const head: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) if (value !== undefined) head[name] = typeof value === 'object' ? [...value] : value;
  return head;
}

/**
 * One held download: the head from the agent, the body from the kernel, paced by credit. When the
 * sockets cannot be joined, the body goes through the agent as any other.
 */
class JoinedDownload {
  private handle: number | undefined;
  private clientFd = -1;
  private base = 0;
  private relayedBytes = 0;
  private onClient = 0;
  private credit = 0;
  private done = false;
  private watcher: NodeJS.Timeout | undefined;
  private lastLook = { at: 0, onClient: 0 };
  private lastMove = 0;
  private finished: () => void = () => undefined;

  constructor(
    private readonly request: FastifyRequest,
    private readonly response: ServerResponse,
    private readonly answer: IncomingMessage,
    private readonly guestRequest: http.ClientRequest,
    private readonly joiner: SocketJoiner,
    private readonly traffic: ProxyTraffic,
    private readonly target: DownloadTarget,
    private readonly length: number,
  ) {}

  async start(status: number, headers: OutgoingHttpHeaders): Promise<void> {
    const ended = new Promise<void>((resolve) => (this.finished = resolve));
    const guestSocket = this.answer.socket;
    const clientSocket = this.request.raw.socket;
    guestSocket.setTimeout(0); // idle in user space while the kernel carries its bytes
    this.answer.on('error', () => undefined); // the guest's close ends the parser's body early: expected
    this.guestRequest.on('error', () => undefined);
    guestSocket.once('end', () => this.check());
    guestSocket.once('close', () => this.check());
    clientSocket.once('close', () => this.finish(false));
    this.response.writeHead(status, headers);
    this.response.flushHeaders();
    await headWritten(clientSocket);
    // Read again after the wait: a socket closed meanwhile may have handed its number on.
    const guestFd = fdOf(guestSocket);
    const clientFd = fdOf(clientSocket);
    if (this.done || guestSocket.destroyed || clientSocket.destroyed || guestFd === undefined || clientFd === undefined) {
      this.finish(false);
      return ended;
    }
    this.clientFd = clientFd;
    this.credit = Math.min(this.length, CREDIT_WINDOW_BYTES);
    try {
      this.base = this.joiner.queued(clientFd);
      if (this.answer.readableLength > 0) throw new Error('the guest sent its body before it was released');
      this.handle = this.joiner.join(guestFd, clientFd, this.credit);
    } catch (error) {
      this.request.log.warn({ err: error, vm: this.target.vm }, 'download not joined in the kernel; relayed by the agent');
      this.handle = undefined;
    }
    if (this.handle === undefined) {
      this.guestRequest.end(); // no credit needed: the agent's own relay pushes back
      this.relayByAgent();
      return ended;
    }
    this.giveCredit();
    this.lastLook = { at: performance.now(), onClient: 0 };
    this.lastMove = Date.now();
    this.watcher = setTimeout(() => this.check(), LOOK_MIN_MS);
    return ended;
  }

  /** The release, and each later credit: a line with the most the guest may have sent; the body's end lifts the limit. */
  private giveCredit(): void {
    if (this.credit >= this.length) this.guestRequest.end();
    else this.guestRequest.write(`${this.credit}\n`);
  }

  private check(): void {
    if (this.done || this.handle === undefined) return;
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
      if (this.answer.socket.destroyed || this.answer.socket.readableEnded) return this.finish(false); // the guest ended early
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
    this.lookAgain(waiting);
  }

  /**
   * When the next look is worth its three system calls (fifty downloads looked at every 20 ms cost
   * the agent a third of what relaying them in user space did), from the paces since the last:
   * once all is relayed, about when the client has the rest; while credit is short, about when
   * the client has taken enough for more, at most 200 ms on; with all credit given, the guest's
   * end is an event, and a look each second only guards against a missed one.
   */
  private lookAgain(waiting: number): void {
    const now = performance.now();
    const elapsed = Math.max(1, now - this.lastLook.at);
    const clientPerMs = (this.onClient - this.lastLook.onClient) / elapsed;
    this.lastLook = { at: now, onClient: this.onClient };
    let delay: number;
    if (this.relayedBytes >= this.length) delay = clientPerMs > 0 ? waiting / clientPerMs : LOOK_MAX_MS;
    else if (this.credit >= this.length) delay = LOOK_MAX_MS;
    else {
      const toMoreCredit = this.credit - CREDIT_WINDOW_BYTES / 2 - this.onClient;
      delay = Math.min(CREDIT_LOOK_MAX_MS, clientPerMs > 0 ? toMoreCredit / clientPerMs : CREDIT_LOOK_MAX_MS / 4);
    }
    this.watcher = setTimeout(() => this.check(), Math.min(LOOK_MAX_MS, Math.max(LOOK_MIN_MS, delay)));
  }

  /** The whole body through the agent (the sockets could not be joined). */
  private relayByAgent(): void {
    const counted = countingStream((bytes) => {
      this.relayedBytes += bytes;
    });
    pipeline(this.answer, counted, this.response, () => this.finish(this.relayedBytes >= this.length));
  }

  private finish(complete: boolean): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.watcher);
    if (this.handle !== undefined) {
      try {
        const relayed = this.joiner.relayed(this.handle); // a client that has it all may close before the last look
        this.relayedBytes = relayed < 0 ? -1 - relayed : relayed;
      } catch {
        // the counter is gone only with the join
      }
      this.joiner.leave(this.handle);
    }
    this.answer.socket.destroy();
    this.traffic.transferred('files', 'from_guest', this.relayedBytes);
    if (complete) this.response.end();
    else this.response.destroy();
    this.request.log.info(
      {
        vm: this.target.vm,
        bytes: this.relayedBytes,
        in_kernel: this.handle !== undefined,
        whole: this.relayedBytes >= this.length,
        statusCode: this.response.statusCode,
      },
      'download relayed',
    );
    this.finished();
  }
}

/** Resolves when what was written to the socket is in the kernel's hands (or the socket closed). */
function headWritten(socket: Socket): Promise<void> {
  return new Promise((resolve) => {
    const look = (): void => {
      if (socket.destroyed || socket.writableLength === 0) resolve();
      else socket.once('drain', look);
    };
    socket.once('close', resolve);
    setImmediate(look);
  });
}
