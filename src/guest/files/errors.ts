// Errors of the file service. Every failure reaches the client as JSON {error, code}; never a stack trace.

export type ErrorCode =
  | 'not_found'
  | 'forbidden_path'
  | 'permission_denied'
  | 'exists'
  | 'directory_not_empty'
  | 'not_a_directory'
  | 'busy'
  | 'too_large'
  | 'invalid_request'
  | 'method_not_allowed'
  | 'range_not_satisfiable'
  | 'precondition_failed'
  | 'no_space'
  | 'internal';

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

/** 412 on a conditional write, carrying the file's current ETag (absent when it is gone or not a file). */
export class PreconditionFailed extends HttpError {
  constructor(
    message: string,
    readonly etag: string | undefined,
  ) {
    super(412, 'precondition_failed', message);
  }
}

export const forbidden = (message = 'path is outside the workspace'): HttpError => new HttpError(403, 'forbidden_path', message);
export const invalid = (message: string): HttpError => new HttpError(400, 'invalid_request', message);
export const tooLarge = (limit: number): HttpError => new HttpError(413, 'too_large', `upload exceeds the limit of ${limit} bytes`);

export function errnoOf(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** Maps a filesystem error to an HttpError; returns undefined for unexpected errors (-> 500, logged). */
export function fromFsError(err: unknown, logicalPath: string): HttpError | undefined {
  if (err instanceof HttpError) return err;
  switch (errnoOf(err)) {
    case 'ENOENT':
      return new HttpError(404, 'not_found', `${logicalPath} does not exist`);
    case 'ENOTDIR':
      return new HttpError(409, 'not_a_directory', `a component of ${logicalPath} is not a directory`);
    case 'EEXIST':
      return new HttpError(409, 'exists', `${logicalPath} already exists`);
    case 'EISDIR':
      return new HttpError(409, 'exists', `a directory is in the way at ${logicalPath}`);
    case 'ENOTEMPTY':
      return new HttpError(409, 'directory_not_empty', `${logicalPath} is a directory that is not empty`);
    case 'EBUSY':
      return new HttpError(409, 'busy', `${logicalPath} is busy`);
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return new HttpError(403, 'permission_denied', `permission denied on ${logicalPath}`);
    case 'ENAMETOOLONG':
      return invalid('file name too long');
    case 'ELOOP':
      return invalid('too many levels of symbolic links');
    case 'EINVAL':
      return invalid(`invalid operation on ${logicalPath}`);
    case 'ENXIO':
      return invalid(`${logicalPath} is not a regular file`);
    case 'EXDEV':
      return invalid('cannot move across filesystems');
    case 'ENOSPC':
    case 'EDQUOT':
      return new HttpError(507, 'no_space', 'no space left in the workspace');
    default:
      return undefined;
  }
}
