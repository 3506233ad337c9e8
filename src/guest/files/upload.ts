// Streaming upload into a temp file beside the target, then fsync + rename.
// A cut-off or oversized upload never leaves a temp file and never touches the old content.
import { randomBytes } from 'node:crypto';
import type { Stats } from 'node:fs';
import { lstat, mkdir, open, rename, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import path from 'node:path';
import { HttpError, errnoOf, tooLarge } from './errors.ts';
import type { Workspace } from './paths.ts';

export class UploadAbortedError extends Error {
  constructor() {
    super('client aborted the upload');
    this.name = 'UploadAbortedError';
  }
}

export const TEMP_PREFIX = '.ct-upload-';
const TEMP_RE = /^\.ct-upload-[0-9a-f]{16}\.tmp$/;

export function isUploadTemp(name: string): boolean {
  return TEMP_RE.test(name);
}

async function writeAll(fh: FileHandle, chunk: Buffer): Promise<void> {
  let offset = 0;
  while (offset < chunk.length) {
    const { bytesWritten } = await fh.write(chunk, offset, chunk.length - offset);
    offset += bytesWritten;
  }
}

/**
 * Copies the request body to `fh` one chunk at a time (the request is paused while a chunk is
 * written, so memory stays bounded), counting bytes; rejects with 413 as soon as `max` is exceeded.
 */
function receiveBody(req: IncomingMessage, fh: FileHandle, max: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let received = 0;
    let settled = false;
    let pending: Promise<void> = Promise.resolve();
    const finish = (err?: unknown): void => {
      if (settled) return;
      settled = true;
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
      if (err === undefined) resolve(received);
      else reject(err instanceof Error ? err : new Error(String(err)));
    };
    const onData = (chunk: Buffer): void => {
      received += chunk.length;
      if (received > max) {
        finish(tooLarge(max));
        return;
      }
      req.pause();
      pending = pending
        .then(() => writeAll(fh, chunk))
        .then(() => {
          if (!settled) req.resume();
        });
      pending.catch(finish);
    };
    // 'end' may be emitted while the last chunk is still being written: wait for it.
    const onEnd = (): void => {
      pending.then(() => finish(), finish);
    };
    const onError = (): void => finish(new UploadAbortedError());
    const onClose = (): void => {
      if (!req.complete) finish(new UploadAbortedError());
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

async function fsyncDirectory(dir: string): Promise<void> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(dir, 'r');
    await fh.sync();
  } catch {
    // some filesystems refuse fsync on directories; the rename itself already happened
  } finally {
    await fh?.close().catch(() => {});
  }
}

export interface UploadResult {
  readonly created: boolean;
  readonly bytes: number;
  readonly stats: Stats;
}

/**
 * Writes the request body to `target` (a confined real path).
 * @throws HttpError (409 when a directory is in the way, 413 when too large), UploadAbortedError, fs errors
 */
/** One commit (check, then rename) at a time per path: two conditional saves cannot both pass. */
const commits = new Map<string, Promise<unknown>>();

async function oneCommitAtATime<T>(target: string, commit: () => Promise<T>): Promise<T> {
  const before = commits.get(target) ?? Promise.resolve();
  const mine = before.catch(() => undefined).then(commit);
  commits.set(target, mine);
  try {
    return await mine;
  } finally {
    if (commits.get(target) === mine) commits.delete(target);
  }
}

/**
 * Streams the body to a temp file, then renames it over `target`. `beforeCommit` sees what is at
 * `target` right before the rename (null: nothing) and may refuse by throwing (If-Match).
 */
export async function writeUpload(
  req: IncomingMessage,
  workspace: Workspace,
  target: string,
  max: number,
  beforeCommit: (current: Stats | null) => void = () => undefined,
): Promise<UploadResult> {
  const before = await lstat(target).catch((err: unknown) => {
    if (errnoOf(err) === 'ENOENT') return null;
    throw err;
  });
  if (before?.isDirectory()) throw new HttpError(409, 'exists', 'a directory exists at this path');

  const dir = path.dirname(target);
  try {
    await mkdir(dir, { recursive: true });
  } catch (err) {
    if (errnoOf(err) === 'EEXIST') throw new HttpError(409, 'not_a_directory', 'a component of the path is not a directory');
    throw err;
  }
  await workspace.verifyDirectory(dir);

  const temp = path.join(dir, `${TEMP_PREFIX}${randomBytes(8).toString('hex')}.tmp`);
  const fh = await open(temp, 'wx', 0o666);
  let closed = false;
  try {
    // keep the permission bits of the file being replaced (e.g. an executable script stays +x)
    if (before?.isFile()) await fh.chmod(before.mode & 0o777);
    const bytes = await receiveBody(req, fh, max);
    await fh.sync();
    await fh.close();
    closed = true;
    const existed = await oneCommitAtATime(target, async () => {
      const current = await lstat(target).catch(() => null);
      beforeCommit(current);
      await rename(temp, target);
      return current !== null;
    });
    await fsyncDirectory(dir);
    return { created: !existed, bytes, stats: await lstat(target) };
  } catch (err) {
    if (!closed) await fh.close().catch(() => {});
    await unlink(temp).catch(() => {});
    throw err;
  }
}

/**
 * Removes upload temp files left by a process that died mid-upload (a crash, a power cut). Run when
 * the server starts, before it accepts uploads, so no temp file it finds can be in use. Walks
 * without following symlinks and stops after `maxEntries`.
 */
export async function sweepStaleUploads(root: string, maxEntries = 200_000): Promise<number> {
  const { readdir, unlink: remove } = await import('node:fs/promises');
  let seen = 0;
  let removed = 0;
  const pending = [root];
  while (pending.length > 0 && seen < maxEntries) {
    const dir = pending.pop() ?? root;
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    for (const entry of entries) {
      seen++;
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) pending.push(full);
      else if (entry.isFile() && isUploadTemp(entry.name)) {
        await remove(full).then(
          () => removed++,
          () => undefined,
        );
      }
    }
  }
  return removed;
}
