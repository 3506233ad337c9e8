// The server's own pages as a browser gets them: the dashboard at /, the join page at /join, their
// assets cached for good, headers that keep other sites from framing them, and a clear 503 when
// the pages were never built.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { startServer, type RunningServer } from '../cli/server.ts';
import { loadServerConfig } from '../server-config/config.ts';

let dir: string;
const servers: RunningServer[] = [];

async function serve(pagesDir: string): Promise<RunningServer> {
  const server = await startServer(loadServerConfig({ DATA_DIR: join(dir, `db-${servers.length}`), PORT: '0' }), {
    log: pino({ level: 'silent' }),
    noBackground: true,
    pagesDir,
  });
  servers.push(server);
  return server;
}

before(() => {
  dir = mkdtempSync(join(tmpdir(), 'ct-pages-'));
  mkdirSync(join(dir, 'built', 'assets'), { recursive: true });
  writeFileSync(join(dir, 'built', 'index.html'), '<!doctype html><title>dashboard</title>');
  writeFileSync(join(dir, 'built', 'join.html'), '<!doctype html><title>join</title>');
  writeFileSync(join(dir, 'built', 'assets', 'join-abc123.js'), 'console.log("join")');
});

after(async () => {
  for (const server of servers) await server.stop();
  rmSync(dir, { recursive: true, force: true });
});

test('/ is the dashboard and /join the join page, never framed by another site, revalidated on each visit', async () => {
  const server = await serve(join(dir, 'built'));
  for (const [path, title] of [
    ['/', 'dashboard'],
    ['/join', 'join'],
  ] as const) {
    const response = await fetch(`${server.url}${path}`);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/html/);
    assert.match(await response.text(), new RegExp(`<title>${title}</title>`));
    assert.match(response.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
    assert.equal(response.headers.get('x-frame-options'), 'DENY');
    assert.equal(response.headers.get('cache-control'), 'no-cache');
  }
  const asset = await fetch(`${server.url}/assets/join-abc123.js`);
  assert.equal(asset.status, 200);
  assert.equal(await asset.text(), 'console.log("join")');
  assert.match(asset.headers.get('cache-control') ?? '', /immutable/);
});

test('a missing asset is 404 and a path out of the assets is refused, both with the error shape', async () => {
  const server = await serve(join(dir, 'built'));
  const missing = await fetch(`${server.url}/assets/nope.js`);
  assert.equal(missing.status, 404);
  assert.equal(((await missing.json()) as { code: string }).code, 'not_found');
  const escape = await fetch(`${server.url}/assets/%2e%2e/%2e%2e/index.html`);
  assert.ok(escape.status >= 400 && escape.status < 500, `status ${escape.status}`);
  assert.ok(typeof ((await escape.json()) as { code?: string }).code === 'string');
});

test('pages that were never built: 503 page_not_built, naming the fix', async () => {
  const server = await serve(join(dir, 'nothing-here'));
  const response = await fetch(`${server.url}/join`);
  assert.equal(response.status, 503);
  const error = (await response.json()) as { code: string; error: string };
  assert.equal(error.code, 'page_not_built');
  assert.match(error.error, /npm run build/);
});
