import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import type { TerminalConfig } from '../shared/config.ts';
import { silentLogger } from '../shared/log.ts';
import type { ServerFrame } from './protocol.ts';
import { startTerminalServer } from './server.ts';
import type { RunningServer } from './server.ts';

const TIMEOUT_MS = 8000;

class Client {
  readonly frames: ServerFrame[] = [];
  output = '';
  closeCode: number | null = null;
  closeReason = '';
  readonly opened: Promise<void>;
  readonly closed: Promise<number>;
  private waiters: Array<() => void> = [];

  constructor(readonly ws: WebSocket) {
    this.opened = new Promise((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
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

  async waitFor(what: string, predicate: () => boolean): Promise<void> {
    const deadline = Date.now() + TIMEOUT_MS;
    while (!predicate()) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what}; output so far: ${JSON.stringify(this.output.slice(-500))}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  waitForOutput(text: string | RegExp): Promise<void> {
    return this.waitFor(`output ${String(text)}`, () => (typeof text === 'string' ? this.output.includes(text) : text.test(this.output)));
  }

  get session(): Extract<ServerFrame, { type: 'session' }> {
    const first = this.frames[0];
    assert.ok(first && first.type === 'session', 'first frame is the session frame');
    return first;
  }

  close(): Promise<number> {
    this.ws.close();
    return this.closed;
  }
}

describe('terminal server', () => {
  let workspace: string;
  let server: RunningServer;
  let base: string;
  const clients: Client[] = [];

  function connect(query = ''): Client {
    const c = new Client(new WebSocket(`ws://127.0.0.1:${server.port}/terminal${query}`));
    clients.push(c);
    return c;
  }

  async function connected(query = ''): Promise<Client> {
    const c = connect(query);
    await c.opened;
    await c.waitFor('session frame', () => c.frames.length > 0);
    return c;
  }

  async function sessions(): Promise<Array<{ id: string; attached: boolean; pid: number; created_at: string }>> {
    const res = await fetch(`${base}/sessions`);
    assert.equal(res.status, 200);
    return ((await res.json()) as { sessions: Array<{ id: string; attached: boolean; pid: number; created_at: string }> }).sessions;
  }

  async function until(what: string, predicate: () => Promise<boolean>): Promise<void> {
    const deadline = Date.now() + TIMEOUT_MS;
    while (!(await predicate())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  function config(overrides: Partial<TerminalConfig> = {}): TerminalConfig {
    return {
      host: '127.0.0.1',
      port: 0,
      workspaceDir: workspace,
      shell: '/bin/bash',
      detachedTtlS: 60,
      scrollbackBytes: 256 * 1024,
      ...overrides,
    };
  }

  const env = (): Record<string, string> => ({ PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: workspace, LANG: 'C.UTF-8', PORT: '9999', NODE_ENV: 'production' });

  before(async () => {
    workspace = await mkdtemp(path.join(os.tmpdir(), 'ct-term-'));
    server = await startTerminalServer({ config: config(), logger: silentLogger, env: env() });
    base = `http://127.0.0.1:${server.port}`;
  });

  after(async () => {
    for (const c of clients) c.ws.terminate();
    await server.close();
    await rm(workspace, { recursive: true, force: true });
  });

  it('answers /health', async () => {
    const res = await fetch(`${base}/health`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as Record<string, unknown>;
    assert.equal(body.status, 'ok');
    assert.equal(body.service, 'terminal');
    assert.equal(typeof body.sessions, 'number');
    assert.equal((await fetch(`${base}/nope`)).status, 404);
  });

  it('runs a login shell in the workspace and echoes command output', async () => {
    const c = await connected();
    assert.match(c.session.id, /^[A-Za-z0-9_-]{1,64}$/);
    assert.equal(c.session.replayed_bytes, 0);
    c.input('echo hello-$((6*7))-marker; echo "cwd=$(pwd) term=$TERM port=${PORT:-unset} env=${NODE_ENV:-unset}"');
    await c.waitForOutput('hello-42-marker');
    await c.waitForOutput(`cwd=${workspace} term=xterm-256color port=unset env=unset`);
    const list = await sessions();
    assert.ok(list.some((s) => s.id === c.session.id && s.attached && s.pid > 0));
    await c.close();
  });

  it('applies ?cols&rows on connect and resize frames', async () => {
    const c = await connected('?cols=90&rows=20');
    c.input('stty size');
    await c.waitForOutput('20 90');
    c.send({ type: 'resize', cols: 100, rows: 30 });
    c.input('stty size');
    await c.waitForOutput('30 100');
    await c.close();
  });

  it('replays earlier output when re-attaching to a named session, same shell', async () => {
    const id = `replay-${process.pid}`;
    const first = await connected(`?session=${id}`);
    assert.equal(first.session.id, id);
    first.input('echo before-$((100+23))-reconnect; echo pid=$$');
    await first.waitForOutput('before-123-reconnect');
    await first.waitForOutput(/pid=\d+/);
    const pid = /pid=(\d+)/.exec(first.output)?.[1];
    await first.close();
    await until('detach', async () => (await sessions()).some((s) => s.id === id && !s.attached));

    const second = await connected(`?session=${id}`);
    assert.equal(second.session.id, id);
    assert.ok(second.session.replayed_bytes > 0);
    const replay = second.frames[1];
    assert.ok(replay && replay.type === 'output' && replay.data.includes('before-123-reconnect'), 'replay is the frame right after the session frame');
    second.input('echo again pid=$$');
    await second.waitForOutput(`again pid=${pid}`);
    await second.close();
  });

  it('takes over an attached session, closing the older socket with 4000', async () => {
    const id = `takeover-${process.pid}`;
    const a = await connected(`?session=${id}`);
    a.input('echo first-$((2+2))');
    await a.waitForOutput('first-4');
    const b = await connected(`?session=${id}`);
    assert.equal(await a.closed, 4000);
    assert.equal(a.closeReason, 'session taken over');
    assert.ok(b.output.includes('first-4'));
    b.input('echo second-$((3+3))');
    await b.waitForOutput('second-6');
    await b.close();
  });

  it('keeps sessions independent', async () => {
    const a = await connected();
    const b = await connected();
    assert.notEqual(a.session.id, b.session.id);
    a.input('export CT_ONLY_A=yes-a; echo pid=$$ set-$((1+1))');
    await a.waitForOutput('set-2');
    b.input('echo "b sees [${CT_ONLY_A:-nothing}]" pid=$$');
    await b.waitForOutput('b sees [nothing]');
    const pidA = /pid=(\d+) set/.exec(a.output)?.[1];
    const pidB = /\] pid=(\d+)/.exec(b.output)?.[1];
    assert.ok(pidA && pidB && pidA !== pidB);
    assert.ok(!a.output.includes('b sees'));
    await Promise.all([a.close(), b.close()]);
  });

  it('answers malformed frames with error frames and keeps working', async () => {
    const c = await connected();
    c.send('not json');
    c.send('[1,2]');
    c.send({ type: 'nope' });
    c.send({ type: 'input', data: 42 });
    c.send({ type: 'resize', cols: 0, rows: 10 });
    c.send({ type: 'resize', cols: 1.5, rows: 10 });
    c.ws.send(Buffer.from([1, 2, 3]), { binary: true });
    await c.waitFor('7 error frames', () => c.frames.filter((f) => f.type === 'error').length === 7);
    c.input('echo still-$((40+2))-alive');
    await c.waitForOutput('still-42-alive');
    await c.close();
  });

  it('refuses an invalid session id', async () => {
    const c = connect('?session=bad%20id!');
    assert.equal(await c.closed, 1008);
    assert.ok(c.frames.some((f) => f.type === 'error'));
  });

  it('sends the exit code and closes with 1000 when the shell exits', async () => {
    const c = await connected();
    const id = c.session.id;
    c.input('exit 3');
    assert.equal(await c.closed, 1000);
    const exit = c.frames.find((f) => f.type === 'exit');
    assert.deepEqual(exit, { type: 'exit', code: 3 });
    assert.ok(!(await sessions()).some((s) => s.id === id));
  });

  it('kills a detached shell after TERMINAL_DETACHED_TTL_S', async () => {
    const short = await startTerminalServer({ config: config({ detachedTtlS: 1 }), logger: silentLogger, env: env() });
    try {
      const c = new Client(new WebSocket(`ws://127.0.0.1:${short.port}/terminal?session=ttl`));
      clients.push(c);
      await c.opened;
      await c.waitFor('session frame', () => c.frames.length > 0);
      await c.close();
      const listed = async (): Promise<number> => {
        const body = (await (await fetch(`http://127.0.0.1:${short.port}/health`)).json()) as { sessions: number };
        return body.sessions;
      };
      assert.equal(await listed(), 1);
      await until('expiry', async () => (await listed()) === 0);
    } finally {
      await short.close();
    }
  });
});
