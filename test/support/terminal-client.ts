// A terminal WebSocket client for tests: collects output frames, waits for text, runs commands.
import { randomUUID } from 'node:crypto';
import { WebSocket } from 'ws';
import type { ServerFrame } from '../../src/guest/terminal/protocol.ts';

export class TerminalClient {
  readonly frames: ServerFrame[] = [];
  output = '';
  closeCode: number | null = null;
  closeReason = '';
  readonly opened: Promise<void>;
  readonly closed: Promise<number>;
  private waiters: (() => void)[] = [];

  constructor(
    readonly ws: WebSocket,
    private readonly timeoutMs = 30_000,
  ) {
    this.opened = new Promise((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
      ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: HTTP ${res.statusCode}`)));
    });
    this.opened.catch(() => undefined);
    this.closed = new Promise((resolve) => {
      ws.once('close', (code, reason) => {
        this.closeCode = code;
        this.closeReason = reason.toString();
        this.notify();
        resolve(code);
      });
    });
    ws.on('message', (data) => {
      const frame = JSON.parse(String(data)) as ServerFrame;
      this.frames.push(frame);
      if (frame.type === 'output') this.output += frame.data;
      this.notify();
    });
  }

  static connect(url: string, options: { headers?: Record<string, string>; timeoutMs?: number } = {}): TerminalClient {
    return new TerminalClient(new WebSocket(url, { headers: options.headers }), options.timeoutMs);
  }

  private notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  input(line: string): void {
    this.send({ type: 'input', data: `${line}\r` });
  }

  async waitFor(what: string, predicate: () => boolean, timeoutMs = this.timeoutMs): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!predicate()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; output so far:\n${this.output.slice(-2000)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(left, 500));
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  waitForText(pattern: RegExp | string, timeoutMs?: number): Promise<void> {
    const test = (): boolean => (typeof pattern === 'string' ? this.output.includes(pattern) : pattern.test(this.output));
    return this.waitFor(`output ${String(pattern)}`, test, timeoutMs);
  }

  /** Runs `command` in the shell and resolves with what it printed (markers make it unambiguous). */
  async run(command: string, timeoutMs?: number): Promise<string> {
    const id = randomUUID().slice(0, 8);
    const begin = `__B${id}__`;
    const end = `__E${id}__`;
    // The markers are printed by the shell, never echoed literally: the echo of the typed line
    // shows the variable names, not their values.
    this.input(`B=__B${id} E=__E${id}; echo "$B"__; ${command}; echo "$E"__"$?"`);
    const done = new RegExp(`${end}(\\d+)`);
    await this.waitFor(`command "${command}"`, () => done.test(this.output.slice(this.output.lastIndexOf(`${begin}`))), timeoutMs);
    const from = this.output.lastIndexOf(`${begin}\r\n`) + begin.length + 2;
    const tail = this.output.slice(from);
    return tail.slice(0, tail.search(done)).replace(/\r\n/g, '\n');
  }

  /** The first frame, which the terminal server always makes the session frame. */
  get session(): Extract<ServerFrame, { type: 'session' }> {
    const first = this.frames[0];
    if (first?.type !== 'session') throw new Error(`the first frame is not the session frame: ${JSON.stringify(first)}`);
    return first;
  }

  close(): Promise<number> {
    this.ws.close();
    return this.closed;
  }
}
