// Helpers of src/api/fuzz.test.ts: an in-process API built as src/api/app.test.ts builds it (real
// store and lifecycle, stand-in VMM and network), on a loopback subnet so that nothing the proxy
// forwards ever leaves the host's loopback, plus a stand-in guest file server that records what
// reaches it.
import { createServer, type Server } from 'node:http';
import { connect } from 'node:net';
import { FILES_PORT } from '../../src/proxy/guest.ts';
import { buildTestApi, type TestApi } from './api.ts';

/**
 * VM addresses come from a loopback subnet, 127.X.Y.0/24 (X, Y picked per process so that two
 * runs at once do not share the stand-in file server's address): seat N gets 127.X.Y.(10+N). The
 * files proxy therefore only ever connects to the host's loopback, never to a real network.
 */
const SUBNET = `127.${64 + (process.pid % 128)}.${1 + Math.floor(Math.random() * 250)}`;
export const FUZZ_CIDR = `${SUBNET}.1/24`;
/** The address the first VM created on an empty API gets (seat 1 of any workshop). */
export const FIRST_VM_IP = `${SUBNET}.11`;
export const WORKER_ID = 'fuzz-worker';
/** Every VM of a fuzz API is made "at" this time, so learner tokens for it can be made up front. */
export const FUZZ_VM_TIME = Date.UTC(2026, 0, 1);

export type FuzzApi = TestApi;

export function buildFuzzApi(o: { agentToken: string | undefined; secret: string | undefined; capacity: number }): Promise<FuzzApi> {
  // Guests "answer" at once: a create with "wait": "ready" never waits, and no probe travels.
  return buildTestApi({ ...o, cidr: FUZZ_CIDR, workerId: WORKER_ID, guestAnswers: true, now: () => FUZZ_VM_TIME });
}

export interface StandInFileServer {
  /** Raw request targets (path and query) the server received, in order. */
  readonly received: string[];
  /** Authorization headers it received (the agent must strip them). */
  readonly authorizations: string[];
  close(): Promise<void>;
}

/**
 * A guest file server stand-in on `ip`:FILES_PORT (a loopback address): answers every request
 * 200 with a small JSON body after draining the upload, and records the request targets.
 */
export async function startStandInFileServer(ip: string): Promise<StandInFileServer> {
  const received: string[] = [];
  const authorizations: string[] = [];
  const server: Server = createServer((request, response) => {
    received.push(request.url ?? '');
    if (request.headers.authorization !== undefined) authorizations.push(request.headers.authorization);
    request.resume();
    request.on('end', () => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end('{"ok":true}');
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(FILES_PORT, ip, () => resolve());
  });
  return {
    received,
    authorizations,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface RawResponse {
  readonly status: number | undefined;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

/**
 * One HTTP/1.1 exchange over a fresh loopback socket, the request target sent byte for byte (no
 * client-side URL normalisation, unlike app.inject), `Connection: close`. `reset` aborts the
 * connection right after sending. Resolves with what came back (status undefined: nothing).
 */
export function rawHttp(
  port: number,
  request: Buffer,
  o: { reset?: boolean; timeoutMs?: number; head?: boolean } = {},
): Promise<RawResponse> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let settled = false;
    const done = (): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve(parseResponse(Buffer.concat(chunks)));
    };
    const timer = setTimeout(done, o.timeoutMs ?? 5_000);
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      // Done once a whole response is in: a proxied answer may keep the connection open.
      if (isComplete(Buffer.concat(chunks), o.head === true)) done();
    });
    socket.on('error', done);
    socket.on('close', done);
    socket.on('connect', () => {
      socket.write(request, () => {
        if (o.reset) {
          socket.resetAndDestroy();
          done();
        }
      });
    });
  });
}

/** Whether `raw` holds a complete response (headers and, by Content-Length or chunked framing, the body). */
function isComplete(raw: Buffer, head: boolean): boolean {
  const split = raw.indexOf('\r\n\r\n');
  if (split < 0) return false;
  const headText = raw.subarray(0, split).toString('latin1');
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(headText)?.[1] ?? 0);
  if (head || status === 204 || status === 304 || (status >= 100 && status < 200)) return true;
  const body = raw.subarray(split + 4);
  const length = /\r\ncontent-length:\s*(\d+)/i.exec(headText)?.[1];
  if (length !== undefined) return body.length >= Number(length);
  if (/\r\ntransfer-encoding:[^\r]*chunked/i.test(headText))
    return body.includes('\r\n0\r\n\r\n') || body.subarray(0, 5).toString() === '0\r\n\r\n';
  return false;
}

function parseResponse(raw: Buffer): RawResponse {
  const text = raw.toString('latin1');
  const split = text.indexOf('\r\n\r\n');
  const head = split < 0 ? text : text.slice(0, split);
  const [statusLine = '', ...lines] = head.split('\r\n');
  const status = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1];
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  let body = split < 0 ? Buffer.alloc(0) : raw.subarray(Buffer.byteLength(text.slice(0, split + 4), 'latin1'));
  if (/chunked/i.test(headers['transfer-encoding'] ?? '')) {
    const parts: Buffer[] = [];
    let at = 0;
    for (;;) {
      const eol = body.indexOf('\r\n', at);
      if (eol < 0) break;
      const size = parseInt(body.subarray(at, eol).toString('latin1'), 16);
      if (!Number.isFinite(size) || size === 0) break;
      parts.push(body.subarray(eol + 2, eol + 2 + size));
      at = eol + 2 + size + 2;
    }
    body = Buffer.concat(parts);
  }
  return { status: status === undefined ? undefined : Number(status), headers, body: body.toString('utf8') };
}

/** Bytes of an HTTP/1.1 request with `Connection: close` (and Content-Length when there is a body). */
export function rawRequest(method: string, target: string, headers: Readonly<Record<string, string>>, body?: string | Buffer): Buffer {
  const lines = [`${method} ${target} HTTP/1.1`, 'Host: agent', 'Connection: close'];
  for (const [name, value] of Object.entries(headers)) lines.push(`${name}: ${value}`);
  const payload = body === undefined ? Buffer.alloc(0) : Buffer.from(body);
  if (body !== undefined) lines.push(`Content-Length: ${payload.length}`);
  return Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), payload]);
}
