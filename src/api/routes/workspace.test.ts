// The learner page as the agent serves it: the link from the token response, the page and its
// assets without a token (they hold no data), relative redirects, and a clear error when unbuilt.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTestApi, type TestApi } from '../../../test/support/api.ts';

const AGENT = { authorization: 'Bearer agent-secret-1' };

async function withPage(pageDir: string, fn: (api: TestApi) => Promise<void>): Promise<void> {
  const api = await buildTestApi({ agentToken: 'agent-secret-1', secret: 's'.repeat(40), capacity: 2, pageDir });
  try {
    await fn(api);
  } finally {
    await api.close();
  }
}

function builtPage(): string {
  const dir = mkdtempSync(join(tmpdir(), 'ct-page-'));
  mkdirSync(join(dir, 'assets'));
  writeFileSync(join(dir, 'index.html'), '<!doctype html><script type="module" src="./assets/app-1234.js"></script>');
  writeFileSync(join(dir, 'assets', 'app-1234.js'), 'console.log("page")');
  return dir;
}

test("the token response links to the seat's page; the link opens it and the token opens its seat", async () => {
  const dir = builtPage();
  try {
    await withPage(dir, async ({ app }) => {
      await app.inject({ method: 'POST', url: '/vms', headers: AGENT, payload: { workshop_id: 'lab', seat_id: 3 } });
      const issued = await app.inject({ method: 'POST', url: '/vms/lab/3/token', headers: { ...AGENT, host: 'worker-7:9090' } });
      assert.equal(issued.statusCode, 201);
      const { token, workspace_url } = issued.json<{ token: string; workspace_url: string }>();
      assert.equal(workspace_url, `http://worker-7:9090/workspace/lab/3/?token=${token}`);

      const url = new URL(workspace_url);
      const page = await app.inject({ url: url.pathname + url.search });
      assert.equal(page.statusCode, 200);
      assert.match(String(page.headers['content-type']), /text\/html/);
      assert.match(page.body, /assets\/app-1234\.js/);
      assert.equal(page.headers['referrer-policy'], 'no-referrer', 'the token in the URL never leaves as a Referer');
      assert.match(String(page.headers['content-security-policy']), /default-src 'self'/);
      assert.equal(page.headers['cache-control'], 'no-cache');

      const asset = await app.inject({ url: '/workspace/lab/3/assets/app-1234.js' });
      assert.equal(asset.statusCode, 200);
      assert.equal(asset.body, 'console.log("page")');
      assert.match(String(asset.headers['cache-control']), /immutable/);
      assert.equal((await app.inject({ url: '/workspace/lab/3/assets/missing.js' })).statusCode, 404);
      assert.notEqual((await app.inject({ url: '/workspace/lab/3/assets/..%2F..%2Findex.html' })).statusCode, 200);

      // What the page calls: with the token in the query (links, WebSockets) or as a bearer.
      assert.equal((await app.inject({ url: `/proxy/lab/3/health?token=${token}` })).statusCode, 200);
      assert.equal((await app.inject({ url: '/proxy/lab/3/health?token=agent-secret-1' })).statusCode, 200);
      assert.equal((await app.inject({ url: '/proxy/lab/3/health?token=wrong' })).statusCode, 401);
      assert.equal((await app.inject({ url: '/vms?token=agent-secret-1' })).statusCode, 401, 'a query token is for proxy paths only');
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the page without its trailing slash is redirected relatively (it works under any prefix), query kept', async () => {
  const dir = builtPage();
  try {
    await withPage(dir, async ({ app }) => {
      const res = await app.inject({ url: '/workspace/lab/3?token=abc' });
      assert.equal(res.statusCode, 308);
      assert.equal(String(res.headers.location), '3/?token=abc');
      assert.equal((await app.inject({ url: '/workspace/lab/x/' })).statusCode, 400, 'a seat is a number');
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an agent whose page was not built says so and how to build it', async () => {
  await withPage(join(tmpdir(), 'ct-no-such-page-dir'), async ({ app }) => {
    const res = await app.inject({ url: '/workspace/lab/3/' });
    assert.equal(res.statusCode, 503);
    assert.equal(res.json().code, 'page_not_built');
    assert.match(res.json().error, /npm run build/);
  });
});
