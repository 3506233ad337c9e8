// The workshop server's /openapi.json and the README's table of its API name the same /api/
// operations: a route added to one and not the other fails here.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { startServer, type RunningServer } from '../cli/server.ts';
import { loadServerConfig } from '../server-config/config.ts';

const root = new URL('../..', import.meta.url).pathname;
const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
/** The README writes path parameters short. */
const PARAMETER_NAMES: Record<string, string> = { id: 'workshopID', seat: 'seatID', workshop: 'workshopID' };

let dir: string;
let server: RunningServer;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ct-server-openapi-'));
  server = await startServer(loadServerConfig({ DATA_DIR: join(dir, 'db'), PORT: '0' }), {
    log: pino({ level: 'silent' }),
    noBackground: true,
  });
});
after(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** `METHOD /api/…` of the README's workshop-server table: `| \`/a\`, \`/b\` | POST, GET | … |` pairs paths and methods in order. */
function readmeOperations(): Set<string> {
  const section = readFileSync(join(root, 'README.md'), 'utf8').split('\n## The workshop server')[1]?.split('\n## ')[0] ?? '';
  const operations = new Set<string>();
  for (const match of section.matchAll(/^\| (`\/api\/[^|]*) \| ([A-Z, ]+) \|/gm)) {
    const paths = [...(match[1] ?? '').matchAll(/`([^`]+)`/g)].map((m) =>
      (m[1] ?? '').replace(/\{(\w+)\}/g, (_, name: string) => `{${PARAMETER_NAMES[name] ?? name}}`),
    );
    const methods = (match[2] ?? '').split(',').map((m) => m.trim());
    paths.forEach((path, i) => {
      for (const method of methods.length === paths.length ? [methods[i] ?? ''] : methods) operations.add(`${method} ${path}`);
    });
  }
  return operations;
}

test("every /api/ operation of /openapi.json is a row of the README's workshop-server API table, and back", async () => {
  const document = (await (await fetch(`${server.url}/openapi.json`)).json()) as { paths: Record<string, Record<string, unknown>> };
  const documented = new Set<string>();
  for (const [path, item] of Object.entries(document.paths)) {
    if (!path.startsWith('/api/')) continue;
    for (const method of Object.keys(item).filter((key) => HTTP_METHODS.includes(key))) documented.add(`${method.toUpperCase()} ${path}`);
  }
  const readme = readmeOperations();
  assert.ok(readme.has('GET /api/setup') && readme.has('POST /api/setup'), 'the README table was read');
  assert.deepEqual([...readme].sort(), [...documented].sort());
});
