// File service: the learner's workspace over HTTP, confined to the workspace (see paths.ts).
//
//   GET    /health                      {"status":"ok","service":"files"}
//   GET    /files/{path}                directory -> JSON listing; file -> bytes (Range, ETag, HEAD)
//   PUT    /files/{path}                raw body -> file (temp + fsync + rename); 201 created / 200 replaced;
//                                       If-Match / If-None-Match: * -> 412 when the file changed (ETag)
//   POST   /files/{path}                {"action":"mkdir"} | {"action":"move","to":"/x","overwrite"?:bool}
//   DELETE /files/{path}[?recursive=true]   (If-Match honoured as for PUT)
import type { Stats } from 'node:fs';
import { constants as fsConstants } from 'node:fs';
import { lstat, mkdir, open, readdir, rename, rm, rmdir, stat, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import http from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { HELD_HEADER, HOLD_ABOVE_HEADER } from '../contract.ts';
import type { FilesConfig } from '../shared/config.ts';
import { listen, sendJson, splitTarget } from '../shared/http.ts';
import type { Logger } from '../shared/log.ts';
import { describeError } from '../shared/log.ts';
import { HttpError, PreconditionFailed, errnoOf, forbidden, fromFsError, invalid, tooLarge } from './errors.ts';
import { contentTypeFor } from './mime.ts';
import { Workspace, logicalPath, parseRequestPath, parseWorkspacePath } from './paths.ts';
import { parseRange } from './range.ts';
import { UploadAbortedError, isUploadTemp, sweepStaleUploads, writeUpload } from './upload.ts';

const MAX_JSON_BODY = 64 * 1024;
/** After rejecting an upload, keep discarding its body this long so the client can read the response, then hang up. */
const DISCARD_LINGER_MS = 2000;
const ALLOW = 'GET, HEAD, PUT, POST, DELETE';
const ACTIVE_CONTENT = /^(text\/html|image\/svg\+xml|application\/xml)\b/;

export type EntryType = 'file' | 'directory' | 'symlink';

export interface Entry {
  readonly name: string;
  readonly path: string;
  readonly type: EntryType;
  readonly size: number;
  readonly modified_at: string;
}

export interface FilesServerOptions {
  readonly config: FilesConfig;
  readonly logger: Logger;
}

export interface RunningServer {
  readonly server: http.Server;
  readonly port: number;
  close(): Promise<void>;
}

/** The size from which the agent asked to hold a body (contract.ts), or Infinity. */
function holdAbove(req: IncomingMessage): number {
  const value = req.headers[HOLD_ABOVE_HEADER];
  return typeof value === 'string' && /^\d{1,15}$/.test(value) ? Number(value) : Infinity;
}

/**
 * The credit lines the agent sends on a held request's body (contract.ts): each the most bytes the
 * answer's body may have sent by then. The request body's end lifts the limit.
 */
class Credit {
  private allowed = 0;
  private state: 'open' | 'ended' | 'closed' = 'open';
  private wake: () => void = () => undefined;

  constructor(req: IncomingMessage) {
    let pending = '';
    req.setEncoding('latin1');
    req.on('data', (text: string) => {
      pending += text;
      for (let newline = pending.indexOf('\n'); newline >= 0; newline = pending.indexOf('\n')) {
        const line = pending.slice(0, newline);
        pending = pending.slice(newline + 1);
        if (/^\d{1,15}$/.test(line)) this.allowed = Math.max(this.allowed, Number(line));
      }
      if (pending.length > 64) req.destroy(); // not credit lines
      this.wake();
    });
    // The answer has ended (its head), so the request is not told when the connection goes: the socket is.
    const closed = (): void => {
      if (this.state === 'open') this.state = 'closed';
      this.wake();
    };
    // Gone before this was made (an agent that gave up while the file was opened): no event will come.
    if (req.destroyed || req.socket.destroyed) this.state = 'closed';
    req.socket.once('close', closed);
    req.once('end', () => {
      req.socket.off('close', closed);
      this.state = 'ended';
      this.wake();
    });
    req.once('close', closed);
  }

  /** Once the body may send more than `sent` bytes, how many in all (Infinity: no limit); -1 if the agent went away. */
  async beyond(sent: number): Promise<number> {
    for (;;) {
      if (this.state === 'ended') return Infinity;
      if (this.state === 'closed') return -1;
      if (this.allowed > sent) return this.allowed;
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }
}

/** How much of a file the server reads and writes at a time. */
const READ_CHUNK_BYTES = 256 * 1024;

/** Resolves when a socket can take more, or is closed. */
function drained(socket: Socket): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = (): void => {
      socket.off('drain', done);
      socket.off('close', done);
      resolve();
    };
    socket.on('drain', done);
    socket.on('close', done);
  });
}

/**
 * Bytes start..end of a file written on the held request's socket after its head, outside HTTP's
 * framing (contract.ts), never past the credit. Closes the handle; destroys the socket when the
 * body cannot be whole (the agent then ends the download).
 */
async function sendWithinCredit(fh: FileHandle, start: number, end: number, socket: Socket, credit: Credit): Promise<void> {
  const total = end - start + 1;
  let read = 0;
  // One chunk is read ahead while the one before is written, as a read stream does.
  const readNext = async (): Promise<Buffer> => {
    const chunk = Buffer.allocUnsafe(Math.min(READ_CHUNK_BYTES, total - read));
    const { bytesRead } = await fh.read(chunk, 0, chunk.length, start + read);
    read += bytesRead;
    return bytesRead === chunk.length ? chunk : chunk.subarray(0, bytesRead);
  };
  let ahead: Promise<Buffer> | undefined = readNext();
  try {
    let sent = 0;
    while (sent < total && ahead) {
      let chunk: Buffer = await ahead;
      if (chunk.length === 0) return void socket.destroy(); // the file shrank: the answer cannot be whole
      ahead = read < total ? readNext() : undefined;
      while (chunk.length > 0) {
        const allowed = await credit.beyond(sent);
        if (allowed < 0 || socket.destroyed) return void socket.destroy();
        const part = chunk.subarray(0, Math.min(chunk.length, allowed - sent));
        chunk = chunk.subarray(part.length);
        sent += part.length;
        if (!socket.write(part)) await drained(socket);
      }
    }
  } finally {
    await ahead?.catch(() => undefined); // never a read on a closed handle
    await fh.close().catch(() => {});
  }
}

function entryOf(segments: readonly string[], st: Stats): Entry {
  const type: EntryType = st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'directory' : 'file';
  return {
    name: segments[segments.length - 1] ?? '',
    path: logicalPath(segments),
    type,
    size: st.size,
    modified_at: st.mtime.toISOString(),
  };
}

function etagOf(st: Stats): string {
  return `"${st.ino.toString(16)}-${st.size.toString(16)}-${Math.round(st.mtimeMs * 1000).toString(16)}"`;
}

function etagMatches(header: string, etag: string): boolean {
  return header
    .split(',')
    .map((t) => t.trim().replace(/^W\//, ''))
    .some((t) => t === '*' || t === etag);
}

/** If-Range: the Range applies only when the validator still matches the current file. */
function ifRangeAllows(header: string | undefined, etag: string, st: Stats): boolean {
  if (header === undefined) return true;
  const value = header.trim();
  if (value.startsWith('"') || value.startsWith('W/')) return value === etag;
  const date = Date.parse(value);
  return !Number.isNaN(date) && Math.floor(st.mtimeMs / 1000) * 1000 <= date;
}

/**
 * If-Match / If-None-Match on a write: an editor saves only over the version it opened, and
 * "create only" never replaces. `current` is the target's stats, null when it does not exist.
 * Throws 412 with the current version so the client can show what it would overwrite.
 */
function checkWritePreconditions(req: IncomingMessage, current: Stats | null, logical: string): void {
  const ifMatch = singleHeader(req, 'if-match');
  const ifNoneMatch = singleHeader(req, 'if-none-match');
  const etag = current !== null && current.isFile() ? etagOf(current) : undefined;
  if (ifMatch !== undefined && (current === null || (ifMatch.trim() !== '*' && (etag === undefined || !etagMatches(ifMatch, etag))))) {
    throw new PreconditionFailed(current === null ? `${logical} no longer exists` : `${logical} changed since that version was read`, etag);
  }
  if (
    ifNoneMatch !== undefined &&
    current !== null &&
    (ifNoneMatch.trim() === '*' || (etag !== undefined && etagMatches(ifNoneMatch, etag)))
  ) {
    throw new PreconditionFailed(`${logical} already exists`, etag);
  }
}

function compareEntries(a: Entry, b: Entry): number {
  const ad = a.type === 'directory' ? 0 : 1;
  const bd = b.type === 'directory' ? 0 : 1;
  if (ad !== bd) return ad - bd;
  return a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
}

async function readJsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_JSON_BODY) throw new HttpError(413, 'too_large', `JSON body exceeds ${MAX_JSON_BODY} bytes`);
    chunks.push(chunk);
  }
  let value: unknown;
  try {
    value = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw invalid('body must be a JSON object');
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid('body must be a JSON object');
  return value as Record<string, unknown>;
}

function singleHeader(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function declaredLength(req: IncomingMessage): number | undefined {
  const header = req.headers['content-length'];
  if (header === undefined) return undefined;
  const n = Number(header);
  return Number.isFinite(n) ? n : undefined;
}

export async function startFilesServer(opts: FilesServerOptions): Promise<RunningServer> {
  const { config, logger } = opts;
  const workspace = await Workspace.open(config.workspaceDir);
  const max = config.maxUploadBytes;
  const swept = await sweepStaleUploads(config.workspaceDir);
  if (swept > 0) logger.info('stale_uploads_removed', { count: swept });

  async function list(res: ServerResponse, segments: readonly string[], dir: string): Promise<void> {
    const dirents = (await readdir(dir)).filter((name) => !isUploadTemp(name)); // in-flight uploads stay invisible
    const entries = (
      await Promise.all(
        dirents.map(async (name) => {
          const st = await lstat(path.join(dir, name)).catch(() => null); // vanished meanwhile
          return st === null ? null : entryOf([...segments, name], st);
        }),
      )
    ).filter((e): e is Entry => e !== null);
    entries.sort(compareEntries);
    sendJson(res, 200, { path: logicalPath(segments), entries });
  }

  async function getOrHead(req: IncomingMessage, res: ServerResponse, segments: readonly string[]): Promise<void> {
    const real = await workspace.resolveThrough(segments);
    // O_NONBLOCK: opening a FIFO must not hang the request; no effect on regular files.
    const fh: FileHandle = await open(real, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK).catch((err: unknown) => {
      // reading below a regular file is simply "not found" (writes report not_a_directory)
      if (errnoOf(err) === 'ENOTDIR') throw new HttpError(404, 'not_found', `${logicalPath(segments)} does not exist`);
      throw err;
    });
    let handedOff = false;
    try {
      const st = await fh.stat();
      if (st.isDirectory()) {
        await list(res, segments, real);
        return;
      }
      if (!st.isFile()) throw invalid('not a regular file');

      const etag = etagOf(st);
      const contentType = contentTypeFor(path.basename(real));
      const headers: Record<string, string> = {
        'Content-Type': contentType,
        'Last-Modified': st.mtime.toUTCString(),
        ETag: etag,
        'Accept-Ranges': 'bytes',
        'Cache-Control': 'no-cache',
        'X-Content-Type-Options': 'nosniff',
      };
      // Learner-written HTML/SVG must not run scripts in the app's origin if opened directly.
      if (ACTIVE_CONTENT.test(contentType)) headers['Content-Security-Policy'] = 'sandbox';
      const inm = req.headers['if-none-match'];
      if (inm !== undefined && etagMatches(inm, etag)) {
        res.writeHead(304, headers);
        res.end();
        return;
      }
      let start = 0;
      let end = st.size - 1;
      let status = 200;
      const range = ifRangeAllows(singleHeader(req, 'if-range'), etag, st)
        ? parseRange(req.headers.range, st.size)
        : { kind: 'none' as const };
      if (range.kind === 'unsatisfiable') {
        sendJson(res, 416, { error: 'range not satisfiable', code: 'range_not_satisfiable' }, { 'Content-Range': `bytes */${st.size}` });
        return;
      }
      if (range.kind === 'range') {
        ({ start, end } = range);
        status = 206;
        headers['Content-Range'] = `bytes ${start}-${end}/${st.size}`;
      }
      const length = end - start + 1;
      // Not for a pipelined request: its head waits for the answer before it, the raw body would not.
      // Nor when the connection ends with the answer's head: a held body follows it on the same connection.
      const held = req.method === 'GET' && length > 0 && length >= holdAbove(req) && res.socket !== null && res.shouldKeepAlive;
      // A held body follows its head outside HTTP's framing: the connection is free again once the agent ends its request.
      headers['Content-Length'] = held ? '0' : String(length);
      if (held) headers[HELD_HEADER] = String(length);
      res.writeHead(status, headers);
      if (req.method === 'HEAD' || end < start) {
        res.end();
        return;
      }
      handedOff = true;
      if (held) {
        const credit = new Credit(req);
        // The server's idle timer is not for a body it cannot see; the agent ends a stalled download.
        req.on('timeout', () => undefined);
        res.end();
        await sendWithinCredit(fh, start, end, req.socket, credit).catch((err: unknown) => {
          logger.info('download_interrupted', { path: logicalPath(segments), ...describeError(err) });
        });
        return;
      }
      // Streams exactly the announced bytes even if the file grows meanwhile; closes the handle itself.
      // Chunks as large as a held body's: under emulation each write costs the guest about as much
      // as its bytes: with 64 KiB chunks (the default) 50 downloads at once got ~30% less through.
      await pipeline(fh.createReadStream({ start, end, highWaterMark: READ_CHUNK_BYTES }), res).catch((err: unknown) => {
        logger.info('download_interrupted', { path: logicalPath(segments), ...describeError(err) });
      });
    } finally {
      if (!handedOff) await fh.close().catch(() => {});
    }
  }

  async function put(req: IncomingMessage, res: ServerResponse, segments: readonly string[]): Promise<void> {
    const declared = declaredLength(req);
    if (declared !== undefined && declared > max) throw tooLarge(max);
    if (segments.length === 0) throw new HttpError(409, 'exists', 'the workspace root is a directory');
    const target = await workspace.resolveThrough(segments);
    // Checked before the body travels (a stale save is refused at once) and again right before
    // the rename (a save that raced another one is refused too).
    const check = (current: Stats | null): void => checkWritePreconditions(req, current, logicalPath(segments));
    check(await stat(target).catch(() => null));
    const result = await writeUpload(req, workspace, target, max, check);
    logger.info('file_written', { path: logicalPath(segments), bytes: result.bytes, created: result.created });
    sendJson(res, result.created ? 201 : 200, entryOf(segments, result.stats), { ETag: etagOf(result.stats) });
  }

  async function post(req: IncomingMessage, res: ServerResponse, segments: readonly string[]): Promise<void> {
    const body = await readJsonBody(req);
    if (body.action === 'mkdir') {
      const target = await workspace.resolveThrough(segments);
      let created: string | undefined;
      try {
        created = await mkdir(target, { recursive: true });
      } catch (err) {
        if (errnoOf(err) === 'EEXIST') throw new HttpError(409, 'exists', `${logicalPath(segments)} exists and is not a directory`);
        throw err;
      }
      const st = await stat(target);
      if (!st.isDirectory()) throw new HttpError(409, 'exists', `${logicalPath(segments)} exists and is not a directory`);
      sendJson(res, created === undefined ? 200 : 201, entryOf(segments, st));
      return;
    }
    if (body.action === 'move') {
      if (typeof body.to !== 'string' || body.to === '') throw invalid('move needs a string "to"');
      if (body.overwrite !== undefined && typeof body.overwrite !== 'boolean') throw invalid('"overwrite" must be a boolean');
      const toSegments = parseWorkspacePath(body.to);
      if (segments.length === 0) throw forbidden('the workspace root cannot be moved');
      if (toSegments.length === 0) throw forbidden('cannot move onto the workspace root');
      const source = await workspace.resolveEntry(segments);
      const dest = await workspace.resolveEntry(toSegments);
      const sourceStats = await lstat(source);
      if (dest === source) {
        sendJson(res, 200, entryOf(toSegments, sourceStats));
        return;
      }
      if (sourceStats.isDirectory() && dest.startsWith(source + path.sep)) throw invalid('cannot move a directory into itself');
      const destStats = await lstat(dest).catch(() => null);
      if (destStats !== null && body.overwrite !== true) {
        throw new HttpError(409, 'exists', `${logicalPath(toSegments)} already exists (set "overwrite": true to replace it)`);
      }
      const destDir = path.dirname(dest);
      try {
        await mkdir(destDir, { recursive: true });
      } catch (err) {
        if (errnoOf(err) === 'EEXIST') throw new HttpError(409, 'not_a_directory', 'a component of "to" is not a directory');
        throw err;
      }
      await workspace.verifyDirectory(destDir);
      try {
        await rename(source, dest);
      } catch (err) {
        const code = errnoOf(err);
        if (code === 'ENOTDIR' || code === 'EISDIR')
          throw new HttpError(409, 'exists', `${logicalPath(toSegments)} exists with a different type`);
        if (code === 'ENOTEMPTY' || code === 'EEXIST')
          throw new HttpError(409, 'directory_not_empty', `${logicalPath(toSegments)} is a directory that is not empty`);
        throw err;
      }
      logger.info('entry_moved', { from: logicalPath(segments), to: logicalPath(toSegments) });
      sendJson(res, 200, entryOf(toSegments, await lstat(dest)));
      return;
    }
    throw invalid(`unknown action ${JSON.stringify(typeof body.action === 'string' ? body.action : null)}; expected "mkdir" or "move"`);
  }

  async function del(req: IncomingMessage, res: ServerResponse, segments: readonly string[], query: URLSearchParams): Promise<void> {
    if (segments.length === 0) throw forbidden('the workspace root cannot be deleted');
    const target = await workspace.resolveEntry(segments);
    const st = await lstat(target);
    if (singleHeader(req, 'if-match') !== undefined) checkWritePreconditions(req, st, logicalPath(segments));
    if (st.isDirectory()) {
      const recursive = query.get('recursive');
      if (recursive === 'true' || recursive === '1') {
        await rm(target, { recursive: true });
      } else {
        try {
          await rmdir(target);
        } catch (err) {
          if (errnoOf(err) === 'EEXIST' || errnoOf(err) === 'ENOTEMPTY') {
            throw new HttpError(409, 'directory_not_empty', `${logicalPath(segments)} is not empty (use ?recursive=true)`);
          }
          throw err;
        }
      }
    } else {
      await unlink(target); // a symlink is removed itself, never its target
    }
    logger.info('entry_deleted', { path: logicalPath(segments), type: entryOf(segments, st).type });
    res.writeHead(204, { 'Cache-Control': 'no-store' });
    res.end();
  }

  /** Answers an upload we will not store, and discards (briefly) the rest of its body so the client can read the answer. */
  function discardBody(req: IncomingMessage): void {
    if (req.complete || req.destroyed) return;
    const timer = setTimeout(() => req.socket.destroy(), DISCARD_LINGER_MS);
    timer.unref();
    req.once('end', () => clearTimeout(timer));
    req.once('close', () => clearTimeout(timer));
    req.resume();
  }

  function fail(req: IncomingMessage, res: ServerResponse, logical: string, err: unknown): void {
    if (err instanceof UploadAbortedError) {
      logger.info('upload_aborted', { path: logical });
      res.destroy();
      return;
    }
    let httpError = fromFsError(err, logical);
    if (httpError === undefined) {
      logger.error('internal_error', { method: req.method, path: logical, ...describeError(err) });
      httpError = new HttpError(500, 'internal', 'internal error');
    }
    if (res.headersSent) {
      res.destroy();
      return;
    }
    if (req.method === 'PUT' || req.method === 'POST') discardBody(req);
    const headers = httpError instanceof PreconditionFailed && httpError.etag !== undefined ? { ETag: httpError.etag } : undefined;
    sendJson(res, httpError.status, { error: httpError.message, code: httpError.code }, headers);
  }

  async function handle(req: IncomingMessage, res: ServerResponse, ctx: { logical: string }): Promise<void> {
    const { rawPath, query } = splitTarget(req.url);
    if (rawPath === '/health') {
      if (req.method !== 'GET' && req.method !== 'HEAD') throw new HttpError(405, 'method_not_allowed', 'method not allowed');
      sendJson(res, 200, { status: 'ok', service: 'files' });
      return;
    }
    if (rawPath !== '/files' && !rawPath.startsWith('/files/')) throw new HttpError(404, 'not_found', 'no such route');
    const segments = parseRequestPath(rawPath.slice('/files/'.length));
    ctx.logical = logicalPath(segments);
    switch (req.method) {
      case 'GET':
      case 'HEAD':
        return getOrHead(req, res, segments);
      case 'PUT':
        return put(req, res, segments);
      case 'POST':
        return post(req, res, segments);
      case 'DELETE':
        return del(req, res, segments, query);
      default:
        res.setHeader('Allow', ALLOW);
        throw new HttpError(405, 'method_not_allowed', 'method not allowed');
    }
  }

  function onRequest(req: IncomingMessage, res: ServerResponse): void {
    const started = process.hrtime.bigint();
    const rawPath = splitTarget(req.url).rawPath;
    res.once('close', () => {
      if (rawPath === '/health' && res.statusCode === 200) return; // polled by the host agent: not worth a log line
      logger.info('request', {
        method: req.method,
        path: rawPath,
        status: res.statusCode,
        completed: res.writableFinished,
        ms: Number((process.hrtime.bigint() - started) / 1_000_000n),
      });
    });
    const ctx = { logical: rawPath };
    handle(req, res, ctx).catch((err: unknown) => fail(req, res, ctx.logical, err));
  }

  const server = http.createServer({ requestTimeout: 0 }, onRequest);
  // Expect: 100-continue lets a client learn about 413 before sending the body.
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    const declared = declaredLength(req);
    if (req.method === 'PUT' && declared !== undefined && declared > max) {
      const err = tooLarge(max);
      sendJson(res, err.status, { error: err.message, code: err.code }, { Connection: 'close' });
      return;
    }
    res.writeContinue();
    onRequest(req, res);
  });

  const port = await listen(server, config.port, config.host, (err) => logger.error('server_error', describeError(err)));
  logger.info('listening', { host: config.host, port, workspace: workspace.root, max_upload_bytes: max });

  return {
    server,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
