// Filesystem helpers used across parts.
import { lstat } from 'node:fs/promises';

/** True when something (file, directory, symlink) exists at `path`. */
export async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path);
    return true;
  } catch {
    return false;
  }
}
