// The seat's file server through the agent's proxy (see src/guest/files/server.ts for the API).
import { authHeaders, tokenUrl, type PageSession } from './page-session.ts';

export interface Entry {
  readonly name: string;
  readonly path: string;
  readonly type: 'file' | 'directory' | 'symlink';
  readonly size: number;
  readonly modified_at: string;
}

/** A failed call, with the server's `{error, code}` when it sent one. */
export class FilesError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string,
    /** On 412: the version now on disk. */
    readonly currentEtag?: string,
  ) {
    super(message);
  }
}

export interface OpenedFile {
  readonly text: string;
  readonly etag: string;
  readonly binary: boolean;
}

const MAX_EDITABLE_BYTES = 2 * 1024 * 1024;

/**
 * `/a/b c` → `files/a/b%20c`: each segment encoded, relative to the proxy base. Paths come from
 * the guest's listings, and the guest is the learner's: a `.` or `..` segment (which encoding
 * leaves as it is) would take the URL out of this seat, to another seat an instructor may open.
 */
function filesPath(path: string): string {
  const segments = path.split('/').filter((s) => s !== '');
  if (segments.some((s) => s === '.' || s === '..')) throw new FilesError(`not a path in the workspace: ${path}`, 400, 'invalid_path');
  return ['files', ...segments.map(encodeURIComponent)].join('/');
}

/** A name a folder can hold: one segment, not `.` or `..`. */
const isEntryName = (name: string): boolean => name !== '' && name !== '.' && name !== '..' && !name.includes('/');

async function failure(response: Response, what: string): Promise<FilesError> {
  let message = `${what}: HTTP ${response.status}`;
  let code = 'http_error';
  try {
    const body = (await response.json()) as { error?: string; code?: string };
    if (body.error) message = `${what}: ${body.error}`;
    if (body.code) code = body.code;
  } catch {
    // not JSON: the status says it
  }
  return new FilesError(message, response.status, code, response.headers.get('etag') ?? undefined);
}

export class FilesApi {
  constructor(private readonly session: PageSession) {}

  private async call(path: string, init: RequestInit, what: string, query: Record<string, string> = {}): Promise<Response> {
    const url = new URL(filesPath(path), this.session.proxyBase);
    for (const [name, value] of Object.entries(query)) url.searchParams.set(name, value);
    const response = await fetch(url, {
      ...init,
      cache: 'no-store',
      headers: { ...authHeaders(this.session), ...(init.headers as Record<string, string> | undefined) },
    });
    if (!response.ok) throw await failure(response, what);
    return response;
  }

  async list(path: string): Promise<Entry[]> {
    const response = await this.call(path, {}, `cannot list ${path}`);
    const listed = ((await response.json()) as { entries: Entry[] }).entries;
    // Each entry's path is the folder's and its name, whatever path the guest put beside it.
    const folder = path.replace(/\/+$/, '');
    return listed.filter((entry) => isEntryName(entry.name)).map((entry) => ({ ...entry, path: `${folder}/${entry.name}` }));
  }

  async open(path: string): Promise<OpenedFile> {
    const response = await this.call(path, {}, `cannot open ${path}`);
    const etag = response.headers.get('etag') ?? '';
    const size = Number(response.headers.get('content-length') ?? 0);
    if (size > MAX_EDITABLE_BYTES) {
      // Not read: the download is cancelled, or it would hold one of the browser's few connections.
      await response.body?.cancel();
      return { text: '', etag, binary: true };
    }
    const bytes = new Uint8Array(await response.arrayBuffer());
    if (bytes.includes(0)) return { text: '', etag, binary: true };
    try {
      // Strict, and the BOM kept: a file that is not UTF-8 would be saved back with its bytes replaced.
      return { text: new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes), etag, binary: false };
    } catch {
      return { text: '', etag, binary: true };
    }
  }

  /**
   * Saves over the version `etag` only (null: only if it does not exist yet; 'always': whatever
   * is there); returns the new version.
   */
  async save(path: string, text: string, etag: string | null | 'always'): Promise<string> {
    const condition: Record<string, string> = etag === 'always' ? {} : etag === null ? { 'if-none-match': '*' } : { 'if-match': etag };
    const response = await this.call(path, { method: 'PUT', body: text, headers: condition }, `cannot save ${path}`);
    return response.headers.get('etag') ?? '';
  }

  async mkdir(path: string): Promise<void> {
    await this.action(path, { action: 'mkdir' }, `cannot create folder ${path}`);
  }

  async move(from: string, to: string): Promise<void> {
    await this.action(from, { action: 'move', to }, `cannot rename ${from}`);
  }

  async remove(path: string, recursive: boolean): Promise<void> {
    await this.call(path, { method: 'DELETE' }, `cannot delete ${path}`, recursive ? { recursive: 'true' } : {});
  }

  private async action(path: string, body: object, what: string): Promise<void> {
    await this.call(path, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } }, what);
  }

  /** The file as a link (the token in the query: a link cannot carry a header). */
  downloadUrl(path: string): string {
    return tokenUrl(this.session, filesPath(path)).href;
  }

  /** Streams one file up, reporting progress (fetch cannot report upload progress; XHR can). */
  upload(file: File, path: string, onProgress: (sent: number, total: number) => void): Promise<void> {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open('PUT', new URL(filesPath(path), this.session.proxyBase).href);
      for (const [name, value] of Object.entries(authHeaders(this.session))) xhr.setRequestHeader(name, value);
      xhr.upload.onprogress = (event) => onProgress(event.loaded, event.lengthComputable ? event.total : file.size);
      xhr.onload = () => {
        if (xhr.status >= 200 && xhr.status < 300) return resolve();
        let message = `HTTP ${xhr.status}`;
        try {
          message = (JSON.parse(xhr.responseText) as { error?: string }).error ?? message;
        } catch {
          // not JSON
        }
        reject(new FilesError(`cannot upload ${path}: ${message}`, xhr.status, 'upload_failed'));
      };
      xhr.onerror = () => reject(new FilesError(`cannot upload ${path}: the connection failed`, 0, 'network'));
      xhr.send(file);
    });
  }
}
