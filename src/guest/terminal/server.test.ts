// The terminal service over a real WebSocket: shells, resize, re-attach with replay, exit, TTL.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { WebSocket } from 'ws';
import type { TerminalConfig } from '../shared/config.ts';
import { silentLogger } from '../shared/log.ts';
import { startTerminalServer } from './server.ts';
import { TerminalClient } from '../../../test/support/terminal-client.ts';
import type { RunningServer } from './server.ts';

const TIMEOUT_MS = 8000;

describe('terminal server', () => {
  let workspace: string;
  let server: RunningServer;
  let base: string;
  const clients: TerminalClient[] = [];

  function connect(query = ''): TerminalClient {
    const c = new TerminalClient(new WebSocket(`ws://127.0.0.1:${server.port}/terminal${query}`), TIMEOUT_MS);
    clients.push(c);
    return c;
  }

  async function connected(query = ''): Promise<TerminalClient> {
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

  const env = (): Record<string, string> => ({
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: workspace,
    LANG: 'C.UTF-8',
    PORT: '9999',
    NODE_ENV: 'production',
  });

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
    await c.waitForText('hello-42-marker');
    await c.waitForText(`cwd=${workspace} term=xterm-256color port=unset env=unset`);
    const list = await sessions();
    assert.ok(list.some((s) => s.id === c.session.id && s.attached && s.pid > 0));
    await c.close();
  });

  it('applies ?cols&rows on connect and resize frames', async () => {
    const c = await connected('?cols=90&rows=20');
    c.input('stty size');
    await c.waitForText('20 90');
    c.send({ type: 'resize', cols: 100, rows: 30 });
    c.input('stty size');
    await c.waitForText('30 100');
    await c.close();
  });

  it('replays earlier output when re-attaching to a named session, same shell', async () => {
    const id = `replay-${process.pid}`;
    const first = await connected(`?session=${id}`);
    assert.equal(first.session.id, id);
    first.input('echo before-$((100+23))-reconnect; echo pid=$$');
    await first.waitForText('before-123-reconnect');
    await first.waitForText(/pid=\d+/);
    const pid = /pid=(\d+)/.exec(first.output)?.[1];
    await first.close();
    await until('detach', async () => (await sessions()).some((s) => s.id === id && !s.attached));

    const second = await connected(`?session=${id}`);
    assert.equal(second.session.id, id);
    assert.ok(second.session.replayed_bytes > 0);
    const replay = second.frames[1];
    assert.ok(
      replay && replay.type === 'output' && replay.data.includes('before-123-reconnect'),
      'replay is the frame right after the session frame',
    );
    second.input('echo again pid=$$');
    await second.waitForText(`again pid=${pid}`);
    await second.close();
  });

  it('takes over an attached session, closing the older socket with 4000', async () => {
    const id = `takeover-${process.pid}`;
    const a = await connected(`?session=${id}`);
    a.input('echo first-$((2+2))');
    await a.waitForText('first-4');
    const b = await connected(`?session=${id}`);
    assert.equal(await a.closed, 4000);
    assert.equal(a.closeReason, 'session taken over');
    assert.ok(b.output.includes('first-4'));
    b.input('echo second-$((3+3))');
    await b.waitForText('second-6');
    await b.close();
  });

  it('keeps sessions independent', async () => {
    const a = await connected();
    const b = await connected();
    assert.notEqual(a.session.id, b.session.id);
    a.input('export CT_ONLY_A=yes-a; echo pid=$$ set-$((1+1))');
    await a.waitForText('set-2');
    b.input('echo "b sees [${CT_ONLY_A:-nothing}]" pid=$$');
    await b.waitForText('b sees [nothing]');
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
    await c.waitForText('still-42-alive');
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
    const short = await startTerminalServer({ config: config({ detachedTtlS: 3 }), logger: silentLogger, env: env() });
    try {
      const c = new TerminalClient(new WebSocket(`ws://127.0.0.1:${short.port}/terminal?session=ttl`), TIMEOUT_MS);
      clients.push(c);
      await c.opened;
      await c.waitFor('session frame', () => c.frames.length > 0);
      await c.close();
      const listed = async (): Promise<number> => {
        const body = (await (await fetch(`http://127.0.0.1:${short.port}/health`)).json()) as { sessions: number };
        return body.sessions;
      };
      assert.equal(await listed(), 1, 'detached, the shell lives on for its TTL');
      await until('expiry', async () => (await listed()) === 0);
    } finally {
      await short.close();
    }
  });
});
