// The API's contract: the guide's JSON shapes, validation errors, auth. Real store and lifecycle
// with the stand-in VMM (integration tests repeat the main paths with QEMU).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { FastifyInstance } from 'fastify';
import { Authenticator } from './auth.ts';
import { buildTestApi } from '../../test/support/api.ts';

async function withApi(
  token: string | undefined,
  fn: (app: FastifyInstance, auditPath: string) => Promise<void>,
  secret?: string,
): Promise<void> {
  const api = await buildTestApi({ agentToken: token, secret, capacity: 3 });
  try {
    await fn(api.app, api.auditPath);
  } finally {
    await api.close();
  }
}

const json = { 'content-type': 'application/json' };

test('health has exactly the guide fields; a VM has its seat address and running status', async () => {
  await withApi(undefined, async (app) => {
    const health = await app.inject({ url: '/health' });
    assert.equal(health.statusCode, 200);
    const body = health.json();
    assert.deepEqual(Object.keys(body).sort(), ['capacity', 'status', 'uptime_seconds', 'vm_count', 'worker_id']);
    assert.equal(body.status, 'healthy');
    assert.equal(body.worker_id, 'test-worker');

    const created = await app.inject({ method: 'POST', url: '/vms', headers: json, payload: { workshop_id: 'my-test', seat_id: 1 } });
    assert.equal(created.statusCode, 201);
    const vm = created.json();
    assert.equal(vm.workshop_id, 'my-test');
    assert.equal(vm.seat_id, 1);
    assert.equal(vm.ip, '192.168.100.11');
    assert.equal(vm.status, 'running');
    assert.equal(vm.mac, '06:00:c0:a8:64:0b');
    assert.equal(vm.vcpus, 1);
    assert.equal(vm.memory_mb, 512);
    assert.ok(Date.parse(vm.created_at) > 0);
    assert.equal(vm.ready, false);

    assert.equal((await app.inject({ url: '/health' })).json().vm_count, 1);
    const list = (await app.inject({ url: '/vms?workshop_id=my-test' })).json();
    assert.deepEqual(
      list.vms.map((v: { seat_id: number }) => v.seat_id),
      [1],
    );
    assert.deepEqual((await app.inject({ url: '/vms?workshop_id=other' })).json(), { vms: [] });
    assert.equal((await app.inject({ url: '/vms/my-test/1' })).json().ip, '192.168.100.11');

    const proxyHealth = await app.inject({ url: '/proxy/my-test/1/health' });
    assert.deepEqual(proxyHealth.json(), {
      workshop_id: 'my-test',
      seat_id: 1,
      vm_ip: '192.168.100.11',
      status: 'unhealthy',
      terminal: false,
      files: false,
    });
    const info = (await app.inject({ url: '/info' })).json();
    assert.equal(info.available_slots, 2);
    assert.equal(info.hypervisor, 'qemu');
    assert.equal(info.bridge_ip, '192.168.100.1');

    assert.equal(
      (await app.inject({ method: 'POST', url: '/vms', headers: json, payload: { workshop_id: 'my-test', seat_id: 1 } })).json().code,
      'vm_exists',
    );
    assert.equal((await app.inject({ method: 'DELETE', url: '/vms/my-test/1' })).statusCode, 204);
    const gone = await app.inject({ url: '/vms/my-test/1' });
    assert.equal(gone.statusCode, 404);
    assert.equal(gone.json().code, 'vm_not_found');
    assert.equal((await app.inject({ url: '/proxy/my-test/1/health' })).statusCode, 404);
    assert.equal((await app.inject({ method: 'DELETE', url: '/vms/my-test/1' })).statusCode, 404);
  });
});

test('a new VM is ready as soon as its guest answers, without the periodic sweep; a VM that never answers stays not ready', async () => {
  let probes = 0;
  // The guest answers from the fourth probe on (a sweep would wait a second between probes; none runs here).
  const api = await buildTestApi({
    agentToken: undefined,
    capacity: 3,
    probe: async (ip) => {
      if (ip !== '192.168.100.11') return { terminal: false, files: false };
      probes++;
      return { terminal: probes > 3, files: probes > 3 };
    },
  });
  try {
    const create = (seat: number) =>
      api.app.inject({ method: 'POST', url: '/vms', headers: json, payload: { workshop_id: 'w', seat_id: seat } });
    assert.equal((await create(1)).statusCode, 201);
    assert.equal((await create(2)).statusCode, 201);
    const started = Date.now();
    let ready = false;
    while (!ready && Date.now() - started < 5_000) {
      ready = (await api.app.inject({ url: '/vms/w/1' })).json().ready === true;
      if (!ready) await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.ok(ready, `seat 1 not ready after ${probes} probes`);
    assert.equal(probes, 4, 'probed until it answered, then no more');
    assert.equal((await api.app.inject({ url: '/vms/w/2' })).json().ready, false);
    // wait=ready on a guest that never answers ends in 504, not a hang.
    const waited = await api.app.inject({
      method: 'POST',
      url: '/vms',
      headers: json,
      payload: { workshop_id: 'w', seat_id: 3, wait: 'ready', wait_timeout_s: 1 },
    });
    assert.equal(waited.statusCode, 504);
    assert.equal(waited.json().code, 'not_ready');
  } finally {
    await api.close();
  }
});

test('stop and start: the VM keeps its seat address, the seat proxy says stopped, bad input is refused', async () => {
  await withApi(undefined, async (app) => {
    await app.inject({ method: 'POST', url: '/vms', headers: json, payload: { workshop_id: 'ws', seat_id: 1 } });
    const stopped = await app.inject({ method: 'POST', url: '/vms/ws/1/stop' });
    assert.equal(stopped.statusCode, 200);
    assert.equal(stopped.json().status, 'stopped');
    assert.equal(stopped.json().ip, '192.168.100.11');
    assert.equal((await app.inject({ method: 'POST', url: '/vms/ws/1/stop' })).json().status, 'stopped');
    const health = await app.inject({ url: '/proxy/ws/1/health' });
    assert.equal(health.json().status, 'stopped');
    assert.equal((await app.inject({ url: '/vms?workshop_id=ws' })).json().vms[0].status, 'stopped');
    // A stopped VM still holds its slot: it can always be started again.
    assert.equal((await app.inject({ url: '/info' })).json().available_slots, 2);

    const started = await app.inject({ method: 'POST', url: '/vms/ws/1/start', headers: json, payload: { wait: 'running' } });
    assert.equal(started.statusCode, 200);
    assert.equal(started.json().status, 'running');
    assert.equal(started.json().ip, '192.168.100.11');
    assert.equal((await app.inject({ method: 'POST', url: '/vms/ws/1/start' })).json().status, 'running');

    const bad = await app.inject({ method: 'POST', url: '/vms/ws/1/start', headers: json, payload: { wait: 'soon' } });
    assert.equal(bad.statusCode, 400);
    const missing = await app.inject({ method: 'POST', url: '/vms/ws/2/stop' });
    assert.equal(missing.statusCode, 404);
    assert.equal(missing.json().code, 'vm_not_found');
  });
});

test('bad input gets 400 with a code naming the problem, and changes nothing', async () => {
  await withApi(undefined, async (app) => {
    const cases: [unknown, number, string][] = [
      ['{"workshop_id": ', 400, 'invalid_json'],
      [{ seat_id: 1 }, 400, 'missing_field'],
      [{ workshop_id: 'ws' }, 400, 'missing_field'],
      [{ workshop_id: 'Bad_Name', seat_id: 1 }, 400, 'invalid_field'],
      [{ workshop_id: '-leading', seat_id: 1 }, 400, 'invalid_field'],
      [{ workshop_id: 'a'.repeat(64), seat_id: 1 }, 400, 'invalid_field'],
      [{ workshop_id: 'ws', seat_id: 0 }, 400, 'invalid_field'],
      [{ workshop_id: 'ws', seat_id: 245 }, 400, 'invalid_field'],
      [{ workshop_id: 'ws', seat_id: '1' }, 400, 'invalid_field'],
      [{ workshop_id: 'ws', seat_id: 1.5 }, 400, 'invalid_field'],
      [{ workshop_id: 'ws', seat_id: 1, vcpus: 64 }, 400, 'invalid_field'],
      [{ workshop_id: 'ws', seat_id: 1, memory_mb: 10 }, 400, 'invalid_field'],
      [{ workshop_id: 'ws', seat_id: 1, colour: 'red' }, 400, 'invalid_field'],
      [[1, 2], 400, 'invalid_field'],
      [{ workshop_id: 'ws', seat_id: 1, pad: 'x'.repeat(20_000) }, 413, 'body_too_large'],
    ];
    for (const [payload, status, code] of cases) {
      const res = await app.inject({
        method: 'POST',
        url: '/vms',
        headers: json,
        payload: typeof payload === 'string' ? payload : JSON.stringify(payload),
      });
      assert.equal(res.statusCode, status, `${JSON.stringify(payload).slice(0, 60)} -> ${res.body}`);
      assert.equal(res.json().code, code, JSON.stringify(payload).slice(0, 60));
      assert.equal(typeof res.json().error, 'string');
    }
    for (const url of ['/vms/ws/0', '/vms/ws/abc', '/vms/ws/999999', '/vms/UPPER/1', '/vms/ws/-1']) {
      const res = await app.inject({ url });
      assert.equal(res.statusCode, 400, url);
      assert.equal(res.json().code, 'invalid_field', url);
    }
    assert.equal((await app.inject({ url: '/health' })).json().vm_count, 0);
  });
});

test('at capacity a create gets 503 at_capacity', async () => {
  await withApi(undefined, async (app) => {
    for (const seat of [1, 2, 3]) {
      assert.equal(
        (await app.inject({ method: 'POST', url: '/vms', headers: json, payload: { workshop_id: 'ws', seat_id: seat } })).statusCode,
        201,
      );
    }
    const res = await app.inject({ method: 'POST', url: '/vms', headers: json, payload: { workshop_id: 'ws', seat_id: 4 } });
    assert.equal(res.statusCode, 503);
    assert.equal(res.json().code, 'at_capacity');
  });
});

test('with AGENT_TOKEN every endpoint but /health needs the bearer token', async () => {
  await withApi('secret123', async (app) => {
    assert.equal((await app.inject({ url: '/health' })).statusCode, 200);
    for (const url of ['/info', '/vms', '/vms/ws/1', '/proxy/ws/1/health', '/proxy/ws/1/files/x']) {
      const res = await app.inject({ url });
      assert.equal(res.statusCode, 401, url);
      assert.equal(res.json().code, 'unauthorized');
      assert.equal((await app.inject({ url, headers: { authorization: 'Bearer wrong-token' } })).statusCode, 401, url);
    }
    const ok = await app.inject({ url: '/vms', headers: { authorization: 'Bearer secret123' } });
    assert.equal(ok.statusCode, 200);
    const create = await app.inject({ method: 'POST', url: '/vms', headers: { ...json }, payload: { workshop_id: 'ws', seat_id: 1 } });
    assert.equal(create.statusCode, 401);
    assert.equal((await app.inject({ url: '/health' })).json().vm_count, 0);
  });
});

test('learner tokens open their own seat proxy paths only, and expire', async () => {
  const secret = 's'.repeat(40);
  await withApi(
    'agent-secret-1',
    async (app) => {
      const agent = { authorization: 'Bearer agent-secret-1', ...json };
      for (const seat of [1, 2]) {
        assert.equal(
          (await app.inject({ method: 'POST', url: '/vms', headers: agent, payload: { workshop_id: 'ws', seat_id: seat } })).statusCode,
          201,
        );
      }
      const issued = await app.inject({ method: 'POST', url: '/vms/ws/1/token', headers: agent, payload: { ttl_s: 60 } });
      assert.equal(issued.statusCode, 201, issued.body);
      const { token, expires_at } = issued.json();
      assert.ok(Date.parse(expires_at) - Date.now() <= 61_000);
      const learner = { authorization: `Bearer ${token}` };

      assert.equal((await app.inject({ url: '/proxy/ws/1/health', headers: learner })).statusCode, 200);
      assert.equal((await app.inject({ url: `/proxy/ws/1/health?token=${token}` })).statusCode, 200);
      for (const url of ['/proxy/ws/2/health', '/proxy/other/1/health', '/vms', '/vms/ws/1', '/info', '/proxy/ws/1%2F../2/health']) {
        const res = await app.inject({ url, headers: learner });
        assert.ok([403, 401, 404].includes(res.statusCode) && res.statusCode !== 200, `${url}: ${res.statusCode}`);
      }
      assert.equal((await app.inject({ method: 'DELETE', url: '/vms/ws/1', headers: learner })).statusCode, 403);
      assert.equal((await app.inject({ method: 'POST', url: '/vms/ws/1/token', headers: learner })).statusCode, 403);
      // A query token is only for proxy paths.
      assert.equal((await app.inject({ url: `/vms?token=${token}` })).statusCode, 401);
      // Tampered or foreign tokens are refused.
      const tampered = token.slice(0, -3) + (token.endsWith('AAA') ? 'BBB' : 'AAA');
      assert.equal((await app.inject({ url: '/proxy/ws/1/health', headers: { authorization: `Bearer ${tampered}` } })).statusCode, 401);
      // The agent token opens every proxy path.
      assert.equal((await app.inject({ url: '/proxy/ws/2/health', headers: agent })).statusCode, 200);
    },
    secret,
  );
});

test('an expired learner token is refused', async () => {
  const secret = 'e'.repeat(40);
  await withApi(
    'agent-secret-1',
    async (app) => {
      const auth = new Authenticator('agent-secret-1', secret, 'test-worker');
      const agent = { authorization: 'Bearer agent-secret-1', ...json };
      await app.inject({ method: 'POST', url: '/vms', headers: agent, payload: { workshop_id: 'ws', seat_id: 1 } });
      const vm = (await app.inject({ url: '/vms/ws/1', headers: agent })).json() as { created_at: string };
      const { token } = await auth.issue('ws', 1, Date.parse(vm.created_at), -10);
      assert.equal((await app.inject({ url: '/proxy/ws/1/health', headers: { authorization: `Bearer ${token}` } })).statusCode, 401);
    },
    secret,
  );
});

test('without WORKSPACE_TOKEN_SECRET no learner token is issued', async () => {
  await withApi('agent-secret-1', async (app) => {
    const agent = { authorization: 'Bearer agent-secret-1', ...json };
    await app.inject({ method: 'POST', url: '/vms', headers: agent, payload: { workshop_id: 'ws', seat_id: 1 } });
    const res = await app.inject({ method: 'POST', url: '/vms/ws/1/token', headers: agent, payload: {} });
    assert.equal(res.statusCode, 503);
    assert.equal(res.json().code, 'tokens_not_configured');
  });
});

test('every control action leaves an audit line with who, what, when and result; no secret in it', async () => {
  const secret = 'a'.repeat(40);
  await withApi(
    'agent-secret-1',
    async (app, auditPath) => {
      const agent = { authorization: 'Bearer agent-secret-1', ...json };
      await app.inject({ method: 'POST', url: '/vms', headers: agent, payload: { workshop_id: 'ws', seat_id: 1 } });
      await app.inject({ method: 'POST', url: '/vms', headers: json, payload: { workshop_id: 'ws', seat_id: 2 } });
      const { token } = (await app.inject({ method: 'POST', url: '/vms/ws/1/token', headers: agent, payload: {} })).json();
      await app.inject({ method: 'DELETE', url: '/vms/ws/1', headers: { authorization: `Bearer ${token}` } });
      await app.inject({ method: 'DELETE', url: '/vms/ws/1', headers: agent });
      await app.close();
      const { readFileSync } = await import('node:fs');
      const text = readFileSync(auditPath, 'utf8');
      const lines = text
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      assert.deepEqual(
        lines.map((l) => [l['actor'], l['action'], l['status'], l['result']]),
        [
          ['agent-token', 'POST /vms', 201, 'ok'],
          ['unauthenticated', 'POST /vms', 401, 'denied'],
          ['agent-token', 'POST /vms/:workshopID/:seatID/token', 201, 'ok'],
          [`learner:ws/1#${String(lines[3]?.['actor']).split('#')[1]}`, 'DELETE /vms/:workshopID/:seatID', 403, 'denied'],
          ['agent-token', 'DELETE /vms/:workshopID/:seatID', 204, 'ok'],
        ],
      );
      assert.ok(lines.every((l) => typeof l['at'] === 'string' && Date.parse(String(l['at'])) > 0));
      assert.ok(!text.includes('agent-secret-1') && !text.includes(token), 'no secret in the audit trail');
    },
    secret,
  );
});

test('malformed HTTP, oversized headers and /health/ answer in the API shape', async () => {
  await withApi('agent-secret-1', async (app) => {
    assert.equal((await app.inject({ url: '/health/' })).statusCode, 200, '/health/ needs no token either');
    await app.listen({ port: 0, host: '127.0.0.1' });
    const port = (app.server.address() as { port: number }).port;
    const { connect } = await import('node:net');
    const raw = (text: string): Promise<string> =>
      new Promise((resolve) => {
        const socket = connect(port, '127.0.0.1', () => socket.end(text));
        let out = '';
        socket.on('data', (d) => (out += String(d)));
        socket.on('close', () => resolve(out));
        socket.on('error', () => resolve(out));
      });
    const garbage = await raw('NOT HTTP AT ALL\r\n\r\n');
    assert.match(garbage, /^HTTP\/1\.1 400/);
    assert.match(garbage, /"code":"invalid_request"/);
    const huge = await raw(`GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`);
    assert.match(huge, /^HTTP\/1\.1 431/);
    assert.match(huge, /"code":"headers_too_large"/);

    // `curl --http2` on http:// asks for h2c: the request is served as HTTP/1.1 all the same.
    const h2c = 'Host: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n';
    const health = await raw(`GET /health HTTP/1.1\r\n${h2c}\r\n`);
    assert.match(health, /^HTTP\/1\.1 200/);
    assert.match(health, /"status":"healthy"/);
    const guarded = await raw(`GET /vms HTTP/1.1\r\n${h2c}\r\n`);
    assert.match(guarded, /^HTTP\/1\.1 401/, 'auth still applies');
    const listed = await raw(`GET /vms HTTP/1.1\r\n${h2c}Authorization: Bearer agent-secret-1\r\n\r\n`);
    assert.match(listed, /^HTTP\/1\.1 200[^]*\{"vms":\[\]\}/);
    const withBody = await raw(`POST /vms HTTP/1.1\r\n${h2c}Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`);
    assert.match(withBody, /^HTTP\/1\.1 400[^]*"code":"invalid_request"/);
  });
});

test('a learner token stops working when its seat is given a new VM', async () => {
  const secret = 'n'.repeat(40);
  await withApi(
    'agent-secret-1',
    async (app) => {
      const agent = { authorization: 'Bearer agent-secret-1', ...json };
      await app.inject({ method: 'POST', url: '/vms', headers: agent, payload: { workshop_id: 'ws', seat_id: 1 } });
      const { token } = (await app.inject({ method: 'POST', url: '/vms/ws/1/token', headers: agent, payload: {} })).json();
      const learner = { authorization: `Bearer ${token}` };
      assert.equal((await app.inject({ url: '/proxy/ws/1/health', headers: learner })).statusCode, 200);
      assert.equal((await app.inject({ method: 'DELETE', url: '/vms/ws/1', headers: agent })).statusCode, 204);
      await new Promise((resolve) => setTimeout(resolve, 5));
      await app.inject({ method: 'POST', url: '/vms', headers: agent, payload: { workshop_id: 'ws', seat_id: 1 } });
      assert.equal((await app.inject({ url: '/proxy/ws/1/health', headers: learner })).statusCode, 403, 'the new VM is another learner’s');
    },
    secret,
  );
});
