// A small client for the Firecracker API: HTTP/1.1 over the VMM's unix socket, JSON bodies.
// Firecracker's HTTP server (micro_http) understands only a handful of headers and no chunked
// bodies, so every request carries an explicit Content-Length and goes on its own connection.
import { request as httpRequest, type OutgoingHttpHeaders } from 'node:http';
import { connect } from 'node:net';
import type {
  BootSource,
  Drive,
  InstanceActionInfo,
  InstanceInfo,
  MachineConfiguration,
  NetworkInterface,
  SnapshotCreateParams,
  SnapshotLoadParams,
  Vm,
  Vsock,
} from './api-types.ts';

export type ApiMethod = 'GET' | 'PUT' | 'PATCH';

export interface ApiResponse {
  readonly statusCode: number;
  /** Parsed JSON body, or undefined when the answer had none (204). */
  readonly body: unknown;
}

/** A request the API refused (status >= 300) or that never got an answer. */
export class FirecrackerApiError extends Error {
  constructor(
    readonly method: ApiMethod,
    readonly path: string,
    /** HTTP status of the answer; undefined when the socket did not answer. */
    readonly statusCode: number | undefined,
    /** Firecracker's own explanation (`fault_message` of the error body), when it gave one. */
    readonly faultMessage: string | undefined,
    message: string,
  ) {
    super(message);
    this.name = 'FirecrackerApiError';
  }
}

export interface RequestOptions {
  /** Give up (and destroy the connection) after this long; default the client's timeout. */
  readonly timeoutMs?: number;
}

function faultMessageOf(body: unknown): string | undefined {
  if (typeof body === 'object' && body !== null && 'fault_message' in body) {
    const fault = (body as { fault_message: unknown }).fault_message;
    if (typeof fault === 'string') return fault;
  }
  return undefined;
}

function parseBody(raw: string): unknown {
  if (raw.trim() === '') return undefined;
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    return raw;
  }
}

export class FirecrackerApiClient {
  constructor(
    readonly socketPath: string,
    private readonly defaultTimeoutMs = 10_000,
  ) {}

  /** Sends one request; resolves with any answer, whatever its status. */
  async send(method: ApiMethod, path: string, body?: unknown, options: RequestOptions = {}): Promise<ApiResponse> {
    const timeoutMs = options.timeoutMs ?? this.defaultTimeoutMs;
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const headers: OutgoingHttpHeaders = { Accept: 'application/json' };
    if (payload !== undefined) {
      headers['Content-Type'] = 'application/json';
      headers['Content-Length'] = Buffer.byteLength(payload);
    }
    return new Promise<ApiResponse>((resolve, reject) => {
      let settled = false;
      const fail = (error: Error): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        const code = (error as NodeJS.ErrnoException).code;
        reject(
          new FirecrackerApiError(
            method,
            path,
            undefined,
            undefined,
            `Firecracker API ${method} ${path} on ${this.socketPath}: ${code ? `${code} ` : ''}${error.message}`,
          ),
        );
      };
      const req = httpRequest({ socketPath: this.socketPath, method, path, headers, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (chunk: Buffer) => chunks.push(chunk));
        res.on('error', fail);
        res.on('end', () => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          resolve({ statusCode: res.statusCode ?? 0, body: parseBody(Buffer.concat(chunks).toString('utf8')) });
        });
      });
      const timer = setTimeout(() => req.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      req.on('error', fail);
      req.end(payload);
    });
  }

  /** Sends one request and rejects with a FirecrackerApiError unless the answer is a success. */
  async call(method: ApiMethod, path: string, body?: unknown, options: RequestOptions = {}): Promise<unknown> {
    const response = await this.send(method, path, body, options);
    if (response.statusCode >= 200 && response.statusCode < 300) return response.body;
    const fault = faultMessageOf(response.body);
    const detail = fault ?? (typeof response.body === 'string' ? response.body : JSON.stringify(response.body ?? null));
    throw new FirecrackerApiError(
      method,
      path,
      response.statusCode,
      fault,
      `Firecracker API ${method} ${path} failed (${response.statusCode}): ${detail}`,
    );
  }

  /** GET / (describeInstance). */
  async describeInstance(options?: RequestOptions): Promise<InstanceInfo> {
    return (await this.call('GET', '/', undefined, options)) as InstanceInfo;
  }

  /** PUT /machine-config (putMachineConfiguration). Pre-boot only. */
  async putMachineConfiguration(body: MachineConfiguration, options?: RequestOptions): Promise<void> {
    await this.call('PUT', '/machine-config', body, options);
  }

  /** PUT /boot-source (putGuestBootSource). Pre-boot only. */
  async putGuestBootSource(body: BootSource, options?: RequestOptions): Promise<void> {
    await this.call('PUT', '/boot-source', body, options);
  }

  /** PUT /drives/{drive_id} (putGuestDriveByID). Pre-boot only. */
  async putGuestDriveByID(body: Drive, options?: RequestOptions): Promise<void> {
    await this.call('PUT', `/drives/${encodeURIComponent(body.drive_id)}`, body, options);
  }

  /** PUT /network-interfaces/{iface_id} (putGuestNetworkInterfaceByID). Pre-boot only. */
  async putGuestNetworkInterfaceByID(body: NetworkInterface, options?: RequestOptions): Promise<void> {
    await this.call('PUT', `/network-interfaces/${encodeURIComponent(body.iface_id)}`, body, options);
  }

  /** PUT /actions (createSyncAction). */
  async createSyncAction(body: InstanceActionInfo, options?: RequestOptions): Promise<void> {
    await this.call('PUT', '/actions', body, options);
  }

  /** PUT /vsock (putGuestVsock). Pre-boot only. */
  async putGuestVsock(body: Vsock, options?: RequestOptions): Promise<void> {
    await this.call('PUT', '/vsock', body, options);
  }

  /** PATCH /vm (patchVm): pause or resume the guest. */
  async patchVm(body: Vm, options?: RequestOptions): Promise<void> {
    await this.call('PATCH', '/vm', body, options);
  }

  /** PUT /snapshot/create (createSnapshot). The guest must be paused. */
  async createSnapshot(body: SnapshotCreateParams, options?: RequestOptions): Promise<void> {
    await this.call('PUT', '/snapshot/create', body, options);
  }

  /** PUT /snapshot/load (loadSnapshot). Only on a VMM nothing else was configured on. */
  async loadSnapshot(body: SnapshotLoadParams, options?: RequestOptions): Promise<void> {
    await this.call('PUT', '/snapshot/load', body, options);
  }
}

/** True when something accepts connections on the unix socket `path` (no request is sent). */
export function socketAnswers(path: string, timeoutMs = 1_000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ path });
    const done = (answer: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(answer);
    };
    // Timers run before I/O in a loop turn: after a stall, let a connect that completed meanwhile win.
    const timer = setTimeout(() => setImmediate(() => done(false)), timeoutMs);
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}
