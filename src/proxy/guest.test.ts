// The readiness probe against a real HTTP server on loopback: a slow answer (a guest starved of
// CPU) still counts; no answer, an unhealthy one or a refused connection does not.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serviceAnswers } from './guest.ts';

async function listen(handler: Parameters<typeof createServer>[1]): Promise<{ server: Server; port: number }> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

test('a service that answers slowly is up; one that never answers or refuses is not, within the timeouts', async () => {
  const slow = await listen((_req, res) => setTimeout(() => res.end('ok'), 600));
  const silent = await listen(() => undefined);
  const failing = await listen((_req, res) => {
    res.statusCode = 503;
    res.end();
  });
  try {
    const timeouts = { connectMs: 300, answerMs: 1500 };
    assert.equal(await serviceAnswers('127.0.0.1', slow.port, timeouts), true, 'slow but answering: up');
    assert.equal(await serviceAnswers('127.0.0.1', silent.port, timeouts), false, 'accepted, never answered: given up');
    assert.equal(await serviceAnswers('127.0.0.1', failing.port, timeouts), false, 'answered, but not healthy');
    // A port nobody listens on: refused at once.
    const refused = await listen(() => undefined);
    refused.server.close();
    assert.equal(await serviceAnswers('127.0.0.1', refused.port, timeouts), false);
  } finally {
    slow.server.closeAllConnections();
    silent.server.closeAllConnections();
    failing.server.closeAllConnections();
    for (const s of [slow, silent, failing]) s.server.close();
  }
});
