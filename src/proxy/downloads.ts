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
 * kernel (src/proxy/kernel-relay.ts implements it with the native sockmap addon).
 */
export interface SocketJoiner {
  /** From now on the guest socket's incoming bytes leave through the client socket. Returns a handle. */
  join(guestFd: number, clientFd: number): number;
  /** The guest's bytes reach user space again; those already redirected go on. */
  detach(handle: number): void;
  /** Both sockets out of the relay. */
  leave(handle: number): void;
  /** Bytes redirected since the join. */
  relayed(handle: number): number;
  /** Bytes written into a TCP socket since it connected: acknowledged, or in its send queue. */
  queued(fd: number): number;
}

/** Bodies from this size on are relayed in the kernel; smaller ones are not worth a connection of their own. */
export const HOLD_ABOVE_BYTES = 1024 * 1024;
/**
 * How often a joined download's progress is looked at: soon near its end and when bytes pile up
 * for a slow client, seldom otherwise (each look costs three system calls; fifty downloads at once
 * looked at every 20 ms cost the agent a third of what it spent).
 */
const LOOK_MIN_MS = 5;
const LOOK_MAX_MS = 100;
/**
 * Redirected bytes may wait for a slow client in the kernel without bound (a sockmap does not push
 * back on the sender), so past this many the rest of the download goes through user space, where
 * TCP pushes back on the guest as usual.
 */
const MAX_WAITING_BYTES = 8 * 1024 * 1024;
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
      const guestFd = fdOf(answer.socket);
      const clientFd = fdOf(request.raw.socket);
      if (!held || guestFd === undefined || clientFd === undefined) {
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
        .start(
          answer.statusCode ?? 200,
          headOf({ ...reply.getHeaders(), ...answerHeaders(answer.headers), connection: 'close' }),
          guestFd,
          clientFd,
        )
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

/** One held download: the head from the agent, the body from the kernel (or, when it must, from user space). */
class JoinedDownload {
  private handle: number | undefined;
  private clientFd = -1;
  private base = 0;
  private relayedBytes = 0;
  private streamedBytes = 0;
  private detached = false;
  private streaming = false;
  private done = false;
  private watcher: NodeJS.Timeout | undefined;
  private lastLook = { at: 0, relayed: 0 };
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

  async start(status: number, headers: OutgoingHttpHeaders, guestFd: number, clientFd: number): Promise<void> {
    const ended = new Promise<void>((resolve) => (this.finished = resolve));
    const guestSocket = this.answer.socket;
    const clientSocket = this.request.raw.socket;
    guestSocket.setTimeout(0); // idle in user space while the kernel carries its bytes
    this.answer.pause(); // anything that reaches user space waits until the kernel's part is out
    this.answer.on('error', () => undefined); // the guest's close ends the parser's body early: expected
    this.guestRequest.on('error', () => undefined);
    guestSocket.once('end', () => this.check());
    guestSocket.once('close', () => this.check());
    clientSocket.once('close', () => this.finish(false));
    this.response.writeHead(status, headers);
    this.response.flushHeaders();
    await headWritten(clientSocket);
    if (clientSocket.destroyed) return this.finish(false);
    this.clientFd = clientFd;
    try {
      this.base = this.joiner.queued(clientFd);
      if (this.answer.readableLength > 0) throw new Error('the guest sent its body before it was released');
      this.handle = this.joiner.join(guestFd, clientFd);
    } catch (error) {
      this.request.log.warn({ err: error, vm: this.target.vm }, 'download not joined in the kernel; relayed by the agent');
      this.handle = undefined;
      this.detached = true;
    }
    this.guestRequest.end(); // releases the guest's body
    if (this.handle === undefined) this.stream();
    else {
      this.lastLook = { at: performance.now(), relayed: 0 };
      this.watcher = setTimeout(() => this.check(), LOOK_MIN_MS);
    }
    return ended;
  }

  private check(): void {
    if (this.done || this.streaming) return;
    clearTimeout(this.watcher);
    this.readRelayed();
    let onClient: number;
    try {
      onClient = this.joiner.queued(this.clientFd) - this.base;
    } catch {
      return this.finish(false); // the client socket is gone
    }
    const waiting = this.relayedBytes - onClient;
    if (!this.detached && waiting > MAX_WAITING_BYTES && this.handle !== undefined) {
      this.joiner.detach(this.handle);
      this.detached = true;
    } else if (waiting <= 0) {
      if (this.relayedBytes >= this.length) return this.finish(true);
      if (this.detached) return this.stream();
      if (this.answer.socket.destroyed || this.answer.socket.readableEnded) return this.finish(false); // the guest ended early
    }
    this.lookAgain(waiting);
  }

  /** Soon when the end is near or bytes pile up; else about when they could pile up to half the bound at this rate. */
  private lookAgain(waiting: number): void {
    const now = performance.now();
    const bytesPerMs = (this.relayedBytes - this.lastLook.relayed) / Math.max(1, now - this.lastLook.at);
    this.lastLook = { at: now, relayed: this.relayedBytes };
    const untilHalfFull = bytesPerMs > 0 ? (MAX_WAITING_BYTES / 2 - waiting) / bytesPerMs : LOOK_MAX_MS;
    const soon = this.detached || this.relayedBytes >= this.length;
    const delay = soon ? LOOK_MIN_MS : Math.min(LOOK_MAX_MS, Math.max(LOOK_MIN_MS, untilHalfFull));
    this.watcher = setTimeout(() => this.check(), delay);
  }

  private readRelayed(): void {
    if (this.handle === undefined) return;
    try {
      this.relayedBytes = this.joiner.relayed(this.handle);
    } catch {
      // the counter is gone only with the join: nothing more was relayed
    }
  }

  /** The rest of the body through user space (after a detach, or when the join failed). */
  private stream(): void {
    if (this.streaming || this.done) return;
    this.streaming = true;
    clearTimeout(this.watcher);
    const remaining = this.length - this.relayedBytes;
    this.answer.on('data', (chunk: Buffer) => {
      this.streamedBytes += chunk.length;
      if (!this.response.write(chunk)) {
        this.answer.pause();
        this.response.once('drain', () => this.answer.resume());
      }
      if (this.streamedBytes >= remaining) this.finish(true);
    });
    const ended = (): void => this.finish(this.streamedBytes >= remaining);
    this.answer.once('end', ended);
    this.answer.once('close', ended);
    this.answer.resume();
  }

  private finish(complete: boolean): void {
    if (this.done) return;
    this.done = true;
    clearTimeout(this.watcher);
    if (this.handle !== undefined) {
      this.readRelayed(); // a client that has it all may close before the last look
      this.joiner.leave(this.handle);
    }
    this.answer.socket.destroy();
    const bytes = this.relayedBytes + this.streamedBytes;
    this.traffic.transferred('files', 'from_guest', bytes);
    if (complete) this.response.end();
    else this.response.destroy();
    this.request.log.info(
      { vm: this.target.vm, bytes, kernel_bytes: this.relayedBytes, whole: bytes >= this.length, statusCode: this.response.statusCode },
      'download relayed in the kernel',
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
    setImmediate(look);
  });
}
