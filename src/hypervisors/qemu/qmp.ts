// A minimal QMP (QEMU Machine Protocol) client over a unix socket: greeting, capabilities
// negotiation, one command at a time. Events are collected, not acted upon.
import { createConnection, type Socket } from 'node:net';

export class QmpError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'QmpError';
  }
}

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

interface Pending {
  resolve: (value: Json) => void;
  reject: (error: Error) => void;
}

export class QmpClient {
  private buffer = '';
  private readonly queue: Pending[] = [];
  private closed = false;
  readonly events: Array<{ event: string; data?: Json }> = [];

  private constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('close', () => this.fail(new QmpError('QMP connection closed')));
    socket.on('error', (error) => this.fail(new QmpError(`QMP: ${error.message}`)));
  }

  /** Connects, reads the greeting and leaves capabilities negotiation mode. */
  static async connect(path: string, timeoutMs = 5000): Promise<QmpClient> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = createConnection(path);
      const timer = setTimeout(() => {
        s.destroy();
        reject(new QmpError(`QMP socket ${path}: no connection within ${timeoutMs} ms`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once('error', (error) => {
        clearTimeout(timer);
        reject(new QmpError(`QMP socket ${path}: ${error.message}`));
      });
    });
    const client = new QmpClient(socket);
    try {
      await client.withTimeout(client.next(), timeoutMs, 'greeting');
      await client.execute('qmp_capabilities', undefined, timeoutMs);
    } catch (error) {
      client.close();
      throw error;
    }
    return client;
  }

  private greetingWaiter: Pending | undefined;
  private greeted = false;

  private next(): Promise<Json> {
    return new Promise((resolve, reject) => {
      this.greetingWaiter = { resolve, reject };
    });
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let newline: number;
    while ((newline = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (line === '') continue;
      let message: { [key: string]: Json };
      try {
        message = JSON.parse(line) as { [key: string]: Json };
      } catch {
        continue;
      }
      if (!this.greeted && 'QMP' in message) {
        this.greeted = true;
        this.greetingWaiter?.resolve(message);
        this.greetingWaiter = undefined;
        continue;
      }
      if (typeof message.event === 'string') {
        this.events.push({ event: message.event, ...(message.data === undefined ? {} : { data: message.data }) });
        continue;
      }
      const pending = this.queue.shift();
      if (!pending) continue;
      if ('error' in message) {
        const err = message.error as { desc?: Json; class?: Json } | null;
        pending.reject(new QmpError(`QMP error: ${String(err?.desc ?? JSON.stringify(err))}`));
      } else {
        pending.resolve(message.return ?? null);
      }
    }
  }

  private fail(error: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.greetingWaiter?.reject(error);
    for (const p of this.queue.splice(0)) p.reject(error);
  }

  private async withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        promise,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new QmpError(`QMP ${what}: no answer within ${ms} ms`)), ms);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Runs one command and resolves with its `return` value. */
  execute(command: string, args?: { [key: string]: Json }, timeoutMs = 5000): Promise<Json> {
    if (this.closed) return Promise.reject(new QmpError('QMP connection closed'));
    const promise = new Promise<Json>((resolve, reject) => this.queue.push({ resolve, reject }));
    this.socket.write(`${JSON.stringify(args === undefined ? { execute: command } : { execute: command, arguments: args })}\n`);
    // After a timeout the next answer could be mistaken for this one's: give up on the connection.
    return this.withTimeout(promise, timeoutMs, command).catch((error: unknown) => {
      if (error instanceof QmpError && /no answer/.test(error.message)) this.close();
      throw error;
    });
  }

  close(): void {
    this.closed = true;
    this.socket.destroy();
  }
}
