// The one error type of the cgroups module: it always names the cgroup file (or directory) and,
// for a write, the value that was refused.

export class CgroupError extends Error {
  constructor(
    message: string,
    /** The cgroup file or directory the operation was about. */
    readonly file: string,
    /** The value written, when the failure was a write. */
    readonly value?: string,
    /** errno code of the underlying failure (EBUSY, EINVAL, ENOENT, ...), when there was one. */
    readonly code?: string,
  ) {
    super(message);
    this.name = 'CgroupError';
  }
}

export function errnoOf(error: unknown): string | undefined {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

export function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
