// A typed client of the agent's HTTP API: what the operator CLI and the workshop server
// call. Errors keep the API's `{error, code}`; an agent that cannot be reached is its own error.
import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { countingStream } from '../shared/streams.ts';
import { pipeline } from 'node:stream/promises';
import { errors, request, type Dispatcher } from 'undici';

/** The agent answered with an error. */
export class AgentError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'AgentError';
  }
}

/** No answer at all: wrong AGENT_URL, agent down, network. */
export class AgentUnreachable extends Error {
  constructor(
    readonly url: string,
    cause: unknown,
  ) {
    super(
      `cannot reach the agent at ${url}: ${cause instanceof Error ? ((cause as NodeJS.ErrnoException).code ?? cause.message) : String(cause)}`,
    );
    this.name = 'AgentUnreachable';
  }
}

export interface Vm {
  readonly workshop_id: string;
  readonly seat_id: number;
  readonly ip: string;
  readonly status: string;
  readonly ready: boolean;
  readonly vcpus: number;
  readonly memory_mb: number;
  readonly template?: string;
  readonly pid: number | null;
  readonly created_at: string;
  readonly restarts: number;
  readonly last_error: string | null;
}

export interface Health {
  readonly status: string;
  readonly worker_id: string;
  readonly vm_count: number;
  readonly capacity: number;
  readonly uptime_seconds: number;
}

export interface IssuedToken {
  readonly token: string;
  readonly token_id: string;
  readonly expires_at: string;
  readonly proxy_base: string;
  readonly workspace_url?: string;
}

export interface CreateVmRequest {
  readonly workshop_id: string;
  readonly seat_id: number;
  readonly vcpus?: number;
  readonly memory_mb?: number;
  readonly template?: string;
  readonly wait?: 'running' | 'ready';
  readonly wait_timeout_s?: number;
}

export type Progress = (done: number, total: number | undefined) => void;

/** How long a call may wait for the agent's answer before it counts as unreachable (ms). */
export interface AgentTimeouts {
  /** Calls the agent answers at once: health, info, VMs, a console, a token. */
  readonly quickMs: number;
  /** Stop and delete (the agent gives a guest 10 s to shut down first), and a create or start that does not wait for `ready`. */
  readonly slowMs: number;
  /** Added to a create's or start's `wait_timeout_s`: the boot before the wait, and the answer's way back. */
  readonly waitMarginMs: number;
}

/**
 * A hung agent costs a caller seconds, not undici's 300 s default (which would also cut a 600 s
 * wait for `ready`). The margin stays under the server's 60 s beyond a seat's ready timeout after
 * which it makes a stuck seat afresh: a create is over, one way or the other, before that.
 */
export const DEFAULT_AGENT_TIMEOUTS: AgentTimeouts = { quickMs: 10_000, slowMs: 60_000, waitMarginMs: 30_000 };

/** The agent's own default `wait_timeout_s` (src/api/routes/vms.ts). */
const AGENT_DEFAULT_WAIT_S = 120;

/** `a/b c` → `a/b%20c`: each segment encoded. */
export function encodePath(path: string): string {
  return path
    .split('/')
    .filter((s) => s !== '')
    .map(encodeURIComponent)
    .join('/');
}

export class AgentClient {
  readonly baseUrl: string;

  constructor(
    baseUrl: string,
    private readonly bearer: string | undefined,
    private readonly timeouts: AgentTimeouts = DEFAULT_AGENT_TIMEOUTS,
  ) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return { ...(this.bearer ? { authorization: `Bearer ${this.bearer}` } : {}), ...extra };
  }

  /**
   * One request; a non-2xx answer becomes an AgentError with the API's message and code. With
   * `timeoutMs`, an agent that sends no answer (or stalls in its body) for that long is unreachable.
   */
  private async send(
    method: Dispatcher.HttpMethod,
    path: string,
    options: { body?: unknown; raw?: Readable; size?: number; timeoutMs?: number } = {},
  ) {
    let response: Dispatcher.ResponseData;
    try {
      const headers =
        options.raw !== undefined
          ? this.headers(options.size === undefined ? {} : { 'content-length': String(options.size) })
          : this.headers(options.body === undefined ? {} : { 'content-type': 'application/json' });
      response = await request(`${this.baseUrl}${path}`, {
        method,
        headers,
        body: options.raw ?? (options.body === undefined ? undefined : JSON.stringify(options.body)),
        ...(options.timeoutMs === undefined ? {} : { headersTimeout: options.timeoutMs, bodyTimeout: options.timeoutMs }),
      });
    } catch (error) {
      throw this.unreachable(error, options.timeoutMs);
    }
    if (response.statusCode >= 400) {
      const text = await this.read(response, options.timeoutMs);
      let message = `HTTP ${response.statusCode}`;
      let code = 'http_error';
      try {
        const parsed = JSON.parse(text) as { error?: string; code?: string };
        message = parsed.error ?? message;
        code = parsed.code ?? code;
      } catch {
        if (text.trim() !== '') message = `${message}: ${text.trim().slice(0, 200)}`;
      }
      throw new AgentError(response.statusCode, code, message);
    }
    return response;
  }

  /** A timeout or a failed connection, as the one error of an agent that did not answer. */
  private unreachable(error: unknown, timeoutMs: number | undefined): AgentUnreachable {
    const timedOut = timeoutMs !== undefined && (error instanceof errors.HeadersTimeoutError || error instanceof errors.BodyTimeoutError);
    return new AgentUnreachable(this.baseUrl, timedOut ? new Error(`no answer within ${timeoutMs / 1000} s`) : error);
  }

  /** The answer's body as text; a body cut off or stalled is the agent not answering, like no answer at all. */
  private async read(response: Dispatcher.ResponseData, timeoutMs: number | undefined): Promise<string> {
    try {
      return await response.body.text();
    } catch (error) {
      throw this.unreachable(error, timeoutMs);
    }
  }

  private async json<T>(method: Dispatcher.HttpMethod, path: string, timeoutMs: number, body?: unknown): Promise<T> {
    const response = await this.send(method, path, body === undefined ? { timeoutMs } : { body, timeoutMs });
    return JSON.parse(await this.read(response, timeoutMs)) as T;
  }

  /** A create's or start's time: the wait for `ready` it asks the agent for, and the margin. */
  private waitMs(options: { wait?: 'running' | 'ready'; wait_timeout_s?: number }): number {
    if (options.wait !== 'ready') return this.timeouts.slowMs;
    return (options.wait_timeout_s ?? AGENT_DEFAULT_WAIT_S) * 1000 + this.timeouts.waitMarginMs;
  }

  health(): Promise<Health> {
    return this.json('GET', '/health', this.timeouts.quickMs);
  }

  info(): Promise<Record<string, unknown>> {
    return this.json('GET', '/info', this.timeouts.quickMs);
  }

  async listVms(workshopId?: string): Promise<Vm[]> {
    const query = workshopId === undefined ? '' : `?workshop_id=${encodeURIComponent(workshopId)}`;
    return (await this.json<{ vms: Vm[] }>('GET', `/vms${query}`, this.timeouts.quickMs)).vms;
  }

  createVm(body: CreateVmRequest): Promise<Vm> {
    return this.json('POST', '/vms', this.waitMs(body), body);
  }

  getVm(workshopId: string, seatId: number): Promise<Vm> {
    return this.json('GET', `/vms/${encodeURIComponent(workshopId)}/${seatId}`, this.timeouts.quickMs);
  }

  /** Stops the VM's VMM and keeps its disk (idempotent). */
  stopVm(workshopId: string, seatId: number): Promise<Vm> {
    return this.json('POST', `/vms/${encodeURIComponent(workshopId)}/${seatId}/stop`, this.timeouts.slowMs);
  }

  /** Boots a stopped VM again from its disk (idempotent); with `wait: 'ready'` once its services answer. */
  startVm(workshopId: string, seatId: number, options: { wait?: 'running' | 'ready'; wait_timeout_s?: number } = {}): Promise<Vm> {
    return this.json('POST', `/vms/${encodeURIComponent(workshopId)}/${seatId}/start`, this.waitMs(options), options);
  }

  async deleteVm(workshopId: string, seatId: number): Promise<void> {
    const timeoutMs = this.timeouts.slowMs;
    await this.read(await this.send('DELETE', `/vms/${encodeURIComponent(workshopId)}/${seatId}`, { timeoutMs }), timeoutMs);
  }

  async logs(workshopId: string, seatId: number, bytes?: number): Promise<string> {
    const query = bytes === undefined ? '' : `?bytes=${bytes}`;
    const timeoutMs = this.timeouts.quickMs;
    return this.read(await this.send('GET', `/vms/${encodeURIComponent(workshopId)}/${seatId}/logs${query}`, { timeoutMs }), timeoutMs);
  }

  token(workshopId: string, seatId: number, ttlS?: number): Promise<IssuedToken> {
    const body = ttlS === undefined ? {} : { ttl_s: ttlS };
    return this.json('POST', `/vms/${encodeURIComponent(workshopId)}/${seatId}/token`, this.timeouts.quickMs, body);
  }

  /** The seat's terminal WebSocket URL and the headers that open it. */
  terminal(workshopId: string, seatId: number, query: Record<string, string>): { url: string; headers: Record<string, string> } {
    const url = new URL(`${this.baseUrl}/proxy/${encodeURIComponent(workshopId)}/${seatId}/terminal`);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    for (const [name, value] of Object.entries(query)) url.searchParams.set(name, value);
    return { url: url.href, headers: this.headers() };
  }

  private filesPath(workshopId: string, seatId: number, path: string): string {
    return `/proxy/${encodeURIComponent(workshopId)}/${seatId}/files/${encodePath(path)}`;
  }

  /** Streams a local file into the seat (never whole in memory). */
  async upload(workshopId: string, seatId: number, path: string, localFile: string, progress?: Progress): Promise<void> {
    const stats = await stat(localFile);
    if (!stats.isFile()) throw new Error(`${localFile} is not a file`);
    let sent = 0;
    const counter = countingStream((n) => {
      sent += n;
      progress?.(sent, stats.size);
    });
    const source = createReadStream(localFile);
    // A read error (permissions, a file that vanished) must end the upload, not stall it.
    source.on('error', (error) => counter.destroy(error));
    const response = await this.send('PUT', this.filesPath(workshopId, seatId, path), { raw: source.pipe(counter), size: stats.size });
    await response.body.dump();
  }

  /** Streams a file of the seat to `localFile` (written beside it, then renamed: never half a file). */
  async download(workshopId: string, seatId: number, path: string, localFile: string, progress?: Progress): Promise<number> {
    const response = await this.send('GET', this.filesPath(workshopId, seatId, path));
    const type = String(response.headers['content-type'] ?? '');
    if (type.startsWith('application/json') && response.headers['etag'] === undefined) {
      await response.body.dump();
      throw new AgentError(400, 'is_a_directory', `${path} is a directory`);
    }
    const total = Number(response.headers['content-length'] ?? NaN);
    let received = 0;
    const temp = `${localFile}.clarateach-partial`;
    try {
      await pipeline(
        response.body,
        countingStream((n) => {
          received += n;
          progress?.(received, Number.isNaN(total) ? undefined : total);
        }),
        createWriteStream(temp),
      );
      await rename(temp, localFile);
    } catch (error) {
      await rm(temp, { force: true });
      throw error;
    }
    return received;
  }
}
