// Confinement of every file-service path to the workspace.
//
// Two layers:
//  1. Lexical: the request path is percent-decoded once; that form and any further decodings
//     (double-encoding attempts such as %252e%252e) must not contain a `..` segment, a NUL, or
//     start with `/` (an absolute path after the /files/ prefix).
//  2. Physical: symlinks are resolved (every existing component, then the parent of a
//     not-yet-existing tail, following dangling links too) and the real path must lie inside the
//     workspace's real path.
// Operations that act THROUGH a path (read, list, write, mkdir) resolve it fully; operations on
// the directory ENTRY itself (delete, move) resolve only its parent, so a symlink that points out
// of the workspace can still be deleted or renamed (that touches only the link, never its target).
//
// Known limit: check-then-use is not atomic (a process in the guest could swap a component for a
// symlink in between). The service runs as the learner, who can read and write anything the
// service can via the terminal anyway; the confinement keeps the HTTP API itself from being used
// as a path-traversal primitive.
import { lstat, readlink, realpath } from 'node:fs/promises';
import path from 'node:path';
import { errnoOf, forbidden, invalid } from './errors.ts';

const MAX_DECODE_LAYERS = 4;
const MAX_SYMLINK_HOPS = 40;

function checkLayer(text: string): void {
  if (text.includes('\0')) throw forbidden('path contains NUL');
  if (text.startsWith('/') || text.startsWith('\\')) throw forbidden('absolute paths are not allowed');
  if (text.split(/[\\/]/).some((segment) => segment === '..')) throw forbidden('path contains a ".." segment');
}

function segmentsOf(text: string): string[] {
  return text.split('/').filter((s) => s !== '' && s !== '.');
}

/** Decodes the part of a request path after `/files/` into workspace-relative segments. */
export function parseRequestPath(encoded: string): string[] {
  let decoded: string;
  try {
    decoded = decodeURIComponent(encoded);
  } catch {
    throw invalid('malformed percent-encoding in path');
  }
  let layer = decoded;
  for (let i = 0; i < MAX_DECODE_LAYERS; i += 1) {
    checkLayer(layer);
    let next: string;
    try {
      next = decodeURIComponent(layer);
    } catch {
      break; // a literal '%' in a file name: nothing further to decode
    }
    if (next === layer) break;
    layer = next;
  }
  return segmentsOf(decoded);
}

/** Parses a workspace path given in a JSON body (e.g. move's "to"): `/a/b` or `a/b`, never decoded. */
export function parseWorkspacePath(value: string): string[] {
  if (value.includes('\0')) throw forbidden('path contains NUL');
  const segments = value.split(/\/+/).filter((s) => s !== '' && s !== '.');
  if (segments.some((s) => s === '..')) throw forbidden('path contains a ".." segment');
  return segments;
}

/** The client-facing form of a workspace path: `/` or `/a/b`. */
export function logicalPath(segments: readonly string[]): string {
  return `/${segments.join('/')}`;
}

export function isInside(candidate: string, root: string): boolean {
  if (candidate === root) return true;
  const prefix = root.endsWith(path.sep) ? root : root + path.sep;
  return candidate.startsWith(prefix);
}

/**
 * Like realpath(3), but the path need not exist: symlinks are resolved in every existing
 * component (dangling ones followed to their target), and the missing tail is appended.
 */
export async function resolveLoose(p: string, hops = 0): Promise<string> {
  if (hops > MAX_SYMLINK_HOPS) throw invalid('too many levels of symbolic links');
  try {
    return await realpath(p);
  } catch (err) {
    const code = errnoOf(err);
    if (code === 'ELOOP') throw invalid('too many levels of symbolic links');
    if (code !== 'ENOENT' && code !== 'ENOTDIR') throw err;
  }
  const st = await lstat(p).catch(() => null);
  if (st?.isSymbolicLink()) {
    const target = await readlink(p);
    return resolveLoose(path.resolve(path.dirname(p), target), hops + 1);
  }
  const parent = path.dirname(p);
  if (parent === p) return p;
  return path.join(await resolveLoose(parent, hops + 1), path.basename(p));
}

export class Workspace {
  /** @param root the workspace's real path (symlinks already resolved). */
  constructor(readonly root: string) {}

  static async open(dir: string): Promise<Workspace> {
    return new Workspace(await realpath(dir));
  }

  private confine(real: string): string {
    if (!isInside(real, this.root)) throw forbidden();
    return real;
  }

  /** Real path to act through (reads, listings, writes, mkdir). */
  async resolveThrough(segments: readonly string[]): Promise<string> {
    return this.confine(await resolveLoose(path.join(this.root, ...segments)));
  }

  /** Real path of the entry itself (its parent resolved, its last component kept as-is). */
  async resolveEntry(segments: readonly string[]): Promise<string> {
    const last = segments[segments.length - 1];
    if (last === undefined) return this.root;
    const parent = this.confine(await resolveLoose(path.join(this.root, ...segments.slice(0, -1))));
    return path.join(parent, last);
  }

  /** Re-checks a directory just created on the way to a target (guards against a symlink swapped in meanwhile). */
  async verifyDirectory(dir: string): Promise<void> {
    if ((await realpath(dir)) !== dir) throw forbidden('path changed while it was being used');
  }
}
