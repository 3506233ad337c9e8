// GET /metrics as an operator's Prometheus scrapes it: VMs by status, memory committed, creates,
// deletes, readiness, recoveries, errors by code, and the proxy's connections and bytes, each
// after the thing it counts really happened (in-process agent, stand-in VMM and guest services).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';
import { buildTestApi, type TestApi } from '../../test/support/api.ts';
import { buildFuzzApi, FIRST_VM_IP, startStandInFileServer } from '../../test/support/fuzz.ts';
import { killProcess } from '../host/process.ts';
import { TERMINAL_PORT } from '../proxy/guest.ts';

const AGENT_TOKEN = 'agent-token-for-tests';
const auth = { authorization: `Bearer ${AGENT_TOKEN}` };

/** The value of the sample `name` whose labels include `labels` (0 when there is none). */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  for (const line of text.split('\n')) {
    const match = /^([a-z_]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const present = new Map([...(match[2] ?? '').matchAll(/([a-z_]+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).every(([key, value]) => present.get(key) === value)) return Number(match[3]);
  }
  return 0;
}

async function scrape(api: TestApi, headers: Record<string, string> = auth): Promise<string> {
  const answer = await api.app.inject({ url: '/metrics', headers });
  assert.equal(answer.statusCode, 200, answer.body);
  assert.match(String(answer.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  return answer.body;
}

async function withApi(api: TestApi, fn: (api: TestApi) => Promise<void>): Promise<void> {
  try {
    await fn(api);
  } finally {
    await api.close();
  }
}

test('/metrics needs the agent token and shows VMs by status, memory committed, creates and deletes by outcome', async () => {
  await withApi(await buildTestApi({ agentToken: AGENT_TOKEN, capacity: 2 }), async (api) => {
    assert.equal((await api.app.inject({ url: '/metrics' })).statusCode, 401);
    const create = (seat: number, memory = 512) =>
      api.app.inject({ method: 'POST', url: '/vms', headers: auth, payload: { workshop_id: 'ws', seat_id: seat, memory_mb: memory } });
    assert.equal((await create(1)).statusCode, 201);
    assert.equal((await create(2, 256)).statusCode, 201);
    assert.equal((await create(1)).statusCode, 409);
    assert.equal((await create(3)).statusCode, 503);
    assert.equal((await api.app.inject({ method: 'DELETE', url: '/vms/ws/2', headers: auth })).statusCode, 204);

    const text = await scrape(api);
    assert.equal(sample(text, 'clarateach_vms', { status: 'running', template: 'default' }), 1);
    assert.match(text, /^clarateach_vms\{status="failed",template="default"\} 0$/m);
    assert.equal(sample(text, 'clarateach_host_memory_committed_bytes'), 512 * 1024 * 1024);
    assert.equal(sample(text, 'clarateach_vm_creates_total', { outcome: 'ok' }), 2);
    assert.equal(sample(text, 'clarateach_vm_creates_total', { outcome: 'vm_exists' }), 1);
    assert.equal(sample(text, 'clarateach_vm_creates_total', { outcome: 'at_capacity' }), 1);
    assert.equal(sample(text, 'clarateach_vm_create_duration_seconds_count', { outcome: 'ok' }), 2);
    assert.equal(sample(text, 'clarateach_vm_deletes_total', { outcome: 'ok' }), 1);
    assert.equal(sample(text, 'clarateach_vm_delete_duration_seconds_count', { outcome: 'ok' }), 1);
    // The process's own metrics, prefixed like the rest.
    assert.ok(sample(text, 'clarateach_process_resident_memory_bytes') > 0);
  });
});

test('every error answer is counted by code, including refused authentication', async () => {
  await withApi(await buildTestApi({ agentToken: AGENT_TOKEN, capacity: 1 }), async (api) => {
    await api.app.inject({ url: '/vms' });
    await api.app.inject({ url: '/vms/ws/1', headers: auth });
    await api.app.inject({ url: '/no/such/route', headers: auth });
    await api.app.inject({ method: 'POST', url: '/vms', headers: { ...auth, 'content-type': 'application/json' }, payload: '{' });
    const text = await scrape(api);
    assert.equal(sample(text, 'clarateach_http_errors_total', { code: 'unauthorized', status: '401' }), 1);
    assert.equal(sample(text, 'clarateach_http_errors_total', { code: 'vm_not_found', status: '404' }), 1);
    assert.equal(sample(text, 'clarateach_http_errors_total', { code: 'not_found', status: '404' }), 1);
    assert.equal(sample(text, 'clarateach_http_errors_total', { code: 'invalid_json', status: '400' }), 1);
  });
});

test('a create whose boot fails is counted as create_failed', async () => {
  await withApi(await buildTestApi({ agentToken: undefined, capacity: 1 }), async (api) => {
    api.driver.failNext = 'the stand-in VMM would not start';
    const failed = await api.app.inject({ method: 'POST', url: '/vms', payload: { workshop_id: 'ws', seat_id: 1 } });
    assert.equal(failed.statusCode, 500);
    const text = await scrape(api, {});
    assert.equal(sample(text, 'clarateach_vm_creates_total', { outcome: 'create_failed' }), 1);
    assert.equal(sample(text, 'clarateach_http_errors_total', { code: 'create_failed', status: '500' }), 1);
    assert.equal(sample(text, 'clarateach_vms', { status: 'creating' }), 0);
  });
});

test("create-to-ready is observed once a new VM's guest answers; live VMMs adopted and dead ones booted again are counted", async () => {
  await withApi(await buildTestApi({ agentToken: undefined, capacity: 1, guestAnswers: true }), async (api) => {
    const created = await api.app.inject({ method: 'POST', url: '/vms', payload: { workshop_id: 'ws', seat_id: 1, wait: 'ready' } });
    assert.equal(created.json<{ ready: boolean }>().ready, true);
    await api.manager.reconcile(); // as after an agent restart: the live VMM is adopted
    const vm = api.manager.get('ws', 1);
    await killProcess({ pid: vm.pid ?? -1, startTime: vm.pidStartTime ?? -1 });
    await api.manager.watch();
    const text = await scrape(api, {});
    assert.equal(sample(text, 'clarateach_vm_create_to_ready_seconds_count'), 1);
    assert.equal(sample(text, 'clarateach_vm_recoveries_total', { outcome: 'adopted' }), 1);
    assert.equal(sample(text, 'clarateach_vm_recoveries_total', { outcome: 'restarted' }), 1);
  });
});

test('files requests through the proxy: one connection each, the bytes up and down', async () => {
  await withApi(await buildFuzzApi({ agentToken: undefined, secret: undefined, capacity: 1 }), async (api) => {
    const guest = await startStandInFileServer(FIRST_VM_IP);
    try {
      await api.app.inject({ method: 'POST', url: '/vms', payload: { workshop_id: 'ws', seat_id: 1 } });
      const upload = Buffer.alloc(100_000, 7);
      const put = await api.app.inject({
        method: 'PUT',
        url: '/proxy/ws/1/files/big.bin',
        headers: { 'content-type': 'application/octet-stream' },
        payload: upload,
      });
      assert.equal(put.statusCode, 200, put.body);
      const got = await api.app.inject({ url: '/proxy/ws/1/files/notes.txt' });
      const text = await scrape(api, {});
      assert.equal(sample(text, 'clarateach_proxy_connections_total', { service: 'files' }), 2);
      assert.equal(sample(text, 'clarateach_proxy_bytes_total', { service: 'files', direction: 'to_guest' }), upload.length);
      assert.equal(
        sample(text, 'clarateach_proxy_bytes_total', { service: 'files', direction: 'from_guest' }),
        put.rawPayload.length + got.rawPayload.length,
      );
    } finally {
      await guest.close();
    }
  });
});

test('a terminal session through the proxy: one connection, its frames counted each way as on the wire', async () => {
  await withApi(await buildFuzzApi({ agentToken: undefined, secret: undefined, capacity: 1 }), async (api) => {
    // The guest's terminal stand-in answers every frame with the same text twice.
    const guest = new WebSocketServer({ host: FIRST_VM_IP, port: TERMINAL_PORT });
    guest.on('connection', (socket) => socket.on('message', (data: Buffer) => socket.send(`${data.toString()}${data.toString()}`)));
    await new Promise((resolve) => guest.once('listening', resolve));
    try {
      await api.app.inject({ method: 'POST', url: '/vms', payload: { workshop_id: 'ws', seat_id: 1 } });
      await api.app.listen({ port: 0, host: '127.0.0.1' });
      const { port } = api.app.server.address() as AddressInfo;
      const client = new WebSocket(`ws://127.0.0.1:${port}/proxy/ws/1/terminal`);
      await new Promise((resolve, reject) => client.once('open', resolve).once('error', reject));
      const reply = new Promise<string>((resolve) => client.once('message', (data: Buffer) => resolve(data.toString())));
      client.send('ls -l\n');
      assert.equal(await reply, 'ls -l\nls -l\n');
      const text = await scrape(api, {});
      client.close();
      assert.equal(sample(text, 'clarateach_proxy_connections_total', { service: 'terminal' }), 1);
      // The frames pass through untouched: 6 bytes of text, a 2-byte header and the client's 4-byte mask.
      assert.equal(sample(text, 'clarateach_proxy_bytes_total', { service: 'terminal', direction: 'to_guest' }), 6 + 2 + 4);
      assert.equal(sample(text, 'clarateach_proxy_bytes_total', { service: 'terminal', direction: 'from_guest' }), 12 + 2);
    } finally {
      for (const socket of guest.clients) socket.terminate();
      await new Promise((resolve) => guest.close(resolve));
    }
  });
});
