// Filesystem helpers used across parts: existence, pid files, reading the end of a log.
import { lstat, open, readFile, stat, truncate } from 'node:fs/promises';

/** True when something (file, directory, symlink, even a dangling one) exists at `path`. */
export async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** The pid a pid file holds; undefined while the file is missing, empty or not (yet) fully written. */
export async function readPidFile(path: string): Promise<number | undefined> {
  try {
    const text = (await readFile(path, 'utf8')).trim();
    return /^\d+$/.test(text) && Number(text) > 0 ? Number(text) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The last `bytes` of a file, not reaching back before offset `from` (e.g. where this run of a
 * process started appending). '' when the file is missing.
 */
export async function readTail(path: string, bytes: number, from = 0): Promise<string> {
  let handle;
  try {
    handle = await open(path, 'r');
  } catch {
    return '';
  }
  try {
    const { size } = await handle.stat();
    const start = Math.max(from, size - bytes, 0);
    if (size <= start) return '';
    const buffer = Buffer.alloc(size - start);
    await handle.read(buffer, 0, buffer.length, start);
    return buffer.toString('utf8');
  } finally {
    await handle.close();
  }
}

/**
 * Keeps an append-only log bounded: once it is past `trimAtBytes`, only its last `keepBytes` stay.
 * Safe under a writer that opened the file with O_APPEND (its next write lands at the new end).
 */
export async function trimLog(path: string, trimAtBytes: number, keepBytes: number): Promise<void> {
  let size: number;
  try {
    size = (await stat(path)).size;
  } catch {
    return;
  }
  if (size <= trimAtBytes) return;
  const handle = await open(path, 'r');
  const tail = Buffer.alloc(keepBytes);
  try {
    await handle.read(tail, 0, keepBytes, size - keepBytes);
  } finally {
    await handle.close();
  }
  await truncate(path, 0);
  const out = await open(path, 'a');
  try {
    await out.write(tail);
  } finally {
    await out.close();
  }
}
