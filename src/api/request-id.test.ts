// Request ids and secrets in the logs: every line a request causes carries its id (the caller's
// X-Request-Id when valid), the answer echoes it, and a `?token=` never reaches a log line.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { WebSocket } from 'ws';
import { buildTestApi } from '../../test/support/api.ts';
import { capturingLines } from '../../test/support/logs.ts';

const AGENT_TOKEN = 'agent-token-for-tests';
const SECRET = 'a-workspace-token-secret-of-32-characters!';
const auth = { authorization: `Bearer ${AGENT_TOKEN}` };

interface LogLine {
  readonly reqId?: string;
  readonly msg?: string;
}

async function withLoggedApi(fn: (api: Awaited<ReturnType<typeof buildTestApi>>, lines: string[]) => Promise<void>): Promise<void> {
  const lines: string[] = [];
  const api = await buildTestApi({ agentToken: AGENT_TOKEN, secret: SECRET, capacity: 3, log: capturingLines(lines) });
  try {
    await fn(api, lines);
  } finally {
    await api.close();
  }
}

function linesOf(lines: string[], reqId: string): LogLine[] {
  return lines.map((line) => JSON.parse(line) as LogLine).filter((line) => line.reqId === reqId);
}

test("a create's log lines, audit line included, all carry the caller's X-Request-Id, and the answer echoes it", async () => {
  await withLoggedApi(async (api, lines) => {
    const created = await api.app.inject({
      method: 'POST',
      url: '/vms',
      headers: { ...auth, 'x-request-id': 'create-42.a_b' },
      payload: { workshop_id: 'ws', seat_id: 1 },
    });
    assert.equal(created.statusCode, 201);
    assert.equal(created.headers['x-request-id'], 'create-42.a_b');
    const messages = linesOf(lines, 'create-42.a_b').map((line) => line.msg ?? '');
    for (const expected of ['incoming request', 'vm running', 'request completed']) assert.ok(messages.includes(expected), expected);
    assert.ok(
      messages.some((m) => m.startsWith('audit: agent-token POST /vms')),
      messages.join(' | '),
    );
  });
});

test('an invalid X-Request-Id is replaced by a fresh id; refusals carry an id too', async () => {
  await withLoggedApi(async (api) => {
    for (const bad of ['has space', 'x'.repeat(129), 'new\nline', '']) {
      const answer = await api.app.inject({ url: '/vms', headers: { ...auth, 'x-request-id': bad } });
      const id = String(answer.headers['x-request-id']);
      assert.notEqual(id, bad);
      assert.match(id, /^[0-9a-f-]{36}$/);
    }
    const refused = await api.app.inject({ url: '/vms' });
    assert.equal(refused.statusCode, 401);
    assert.match(String(refused.headers['x-request-id']), /^[0-9a-f-]{36}$/);
    const first = await api.app.inject({ url: '/health' });
    const second = await api.app.inject({ url: '/health' });
    assert.notEqual(first.headers['x-request-id'], second.headers['x-request-id']);
  });
});

test('a learner token in ?token= never appears in the logs, in HTTP requests or terminal upgrades', async () => {
  await withLoggedApi(async (api, lines) => {
    await api.app.inject({ method: 'POST', url: '/vms', headers: auth, payload: { workshop_id: 'ws', seat_id: 1 } });
    const token = (await api.app.inject({ method: 'POST', url: '/vms/ws/1/token', headers: auth })).json<{ token: string }>().token;
    const health = await api.app.inject({ url: `/proxy/ws/1/health?token=${token}`, headers: { 'x-request-id': 'with-token' } });
    assert.equal(health.statusCode, 200);
    const logged = linesOf(lines, 'with-token');
    assert.ok(logged.length >= 2, 'the request was logged');
    assert.ok(
      lines.some((line) => line.includes('/proxy/ws/1/health?token=[redacted]')),
      'its URL is logged with the token masked',
    );

    await api.app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = api.app.server.address() as AddressInfo;
    const socket = new WebSocket(`ws://127.0.0.1:${port}/proxy/ws/1/terminal?token=${token}`, {
      headers: { 'x-request-id': 'terminal-7' },
    });
    const echoed = await new Promise<string | undefined>((resolve, reject) => {
      socket.once('upgrade', (response) => resolve(response.headers['x-request-id'] as string | undefined));
      socket.once('error', reject);
    });
    socket.terminate();
    assert.equal(echoed, 'terminal-7');
    assert.ok(
      linesOf(lines, 'terminal-7').some((line) => line.msg === 'terminal connection'),
      'the upgrade line carries its request id',
    );
    for (const line of lines) assert.ok(!line.includes(token), `token in log line: ${line}`);
  });
});

test('a refused terminal upgrade echoes its request id and logs nothing of the token', async () => {
  await withLoggedApi(async (api, lines) => {
    await api.app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = api.app.server.address() as AddressInfo;
    const socket = new WebSocket(`ws://127.0.0.1:${port}/proxy/ws/1/terminal?token=not-a-valid-token`, {
      headers: { 'x-request-id': 'refused-1' },
    });
    const refusal = await new Promise<{ status: number | undefined; id: unknown }>((resolve) => {
      socket.once('unexpected-response', (_request, response) =>
        resolve({ status: response.statusCode, id: response.headers['x-request-id'] }),
      );
      socket.once('error', () => resolve({ status: undefined, id: undefined }));
    });
    socket.terminate();
    assert.deepEqual(refusal, { status: 401, id: 'refused-1' });
    for (const line of lines) assert.ok(!line.includes('not-a-valid-token'), `token in log line: ${line}`);
  });
});
