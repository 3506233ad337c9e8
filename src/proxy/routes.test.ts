import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { buildFuzzApi, FIRST_VM_IP } from '../../test/support/fuzz.ts';
import { FILES_PORT } from './guest.ts';
import { escapesWorkspace } from './routes.ts';

test('paths that climb out of the workspace are recognised however they are encoded', () => {
  for (const path of [
    '/../etc/passwd',
    '/%2e%2e/etc',
    '/..%2fetc',
    '/%252e%252e/etc',
    '/a/%25252e%25252e/b',
    '/a\\..\\b',
    '/x%00y',
    '/%E0%A4%A',
  ]) {
    assert.equal(escapesWorkspace(path), true, path);
  }
  for (const path of ['/', '/notes/hello.txt', '/a..b/c', '/..hidden', '/%20space', '/d%C3%A9j%C3%A0']) {
    assert.equal(escapesWorkspace(path), false, path);
  }
});

test("a guest's answer cannot act in the agent's origin: sandboxed with the guest's own policies kept, never sniffed, only a file server's headers", async () => {
  const api = await buildFuzzApi({ agentToken: undefined, secret: undefined, capacity: 1 });
  // A learner can replace the guest's file server with one that answers a page of its own.
  const guest = createServer((_request, response) => {
    response.writeHead(200, {
      'content-type': 'text/html',
      'content-security-policy': "img-src 'none'",
      'x-content-type-options': 'sniff-away',
      'set-cookie': 'session=from-the-guest; Path=/',
      location: 'https://elsewhere.example/login',
      'clear-site-data': '"cookies"',
      etag: '"v1"',
    });
    response.end('<script>document.title = "ran in the agent\'s origin"</script>');
  });
  await new Promise<void>((resolve) => guest.listen(FILES_PORT, FIRST_VM_IP, resolve));
  try {
    await api.app.inject({ method: 'POST', url: '/vms', payload: { workshop_id: 'ws', seat_id: 1 } });
    const page = await api.app.inject({ url: '/proxy/ws/1/files/index.html' });
    assert.equal(page.statusCode, 200);
    assert.match(page.body, /<script>/, "the guest's bytes pass unchanged");
    assert.deepEqual(page.headers['content-security-policy'], ["img-src 'none'", 'sandbox']);
    assert.equal(page.headers['x-content-type-options'], 'nosniff');
    assert.equal(page.headers['set-cookie'], undefined);
    assert.equal(page.headers.location, undefined, 'no redirect elsewhere from this origin');
    assert.equal(page.headers['clear-site-data'], undefined);
    assert.equal(page.headers.etag, '"v1"', "a file server's own headers pass");
    assert.equal(page.headers['content-type'], 'text/html');
  } finally {
    await new Promise((resolve) => guest.close(resolve));
    await api.app.close();
  }
});
