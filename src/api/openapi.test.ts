// GET /openapi.json: a valid OpenAPI 3 document that lists exactly the README's API table and
// every endpoint of the operators' guide, made from the schemas that validate requests.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { buildTestApi } from '../../test/support/api.ts';

const root = new URL('../..', import.meta.url).pathname;
const HTTP_METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
/** The README's "any" for the files proxy: every method the route takes. */
const ANY = ['get', 'head', 'put', 'post', 'delete', 'patch'];

interface OpenApiDocument {
  openapi: string;
  info: { title: string; version: string };
  paths: Record<string, Record<string, { responses?: unknown; parameters?: { name: string; in: string }[] }>>;
}

/** `| \`/path\` | METHOD | ... |` rows of a markdown table, as [path, methods] in OpenAPI's spelling. */
function tableEndpoints(markdown: string): Set<string> {
  const endpoints = new Set<string>();
  // The method cell: one method, or a list (`GET, HEAD, PUT`), with a note in brackets after it.
  for (const match of markdown.matchAll(/^\| `(\/[^`]*)` \| ([A-Za-z]+(?:, [A-Za-z]+)*)(?: \([^)|]*\))? \|/gm)) {
    const path = (match[1] ?? '').split('?')[0] ?? '';
    for (const listed of (match[2] ?? '').toLowerCase().split(', ')) {
      // A WebSocket starts as a GET upgrade; the guide's "HTTP" and "any" are every method.
      const methods = listed === 'websocket' ? ['get'] : listed === 'any' || listed === 'http' ? ANY : [listed];
      for (const m of methods) endpoints.add(`${m.toUpperCase()} ${path}`);
    }
  }
  return endpoints;
}

/** The document's operations, its wildcard `{*}` written `*` as the tables write it. */
function documentEndpoints(document: OpenApiDocument): Set<string> {
  const endpoints = new Set<string>();
  for (const [path, item] of Object.entries(document.paths)) {
    for (const method of Object.keys(item).filter((key) => HTTP_METHODS.includes(key))) {
      endpoints.add(`${method.toUpperCase()} ${path.replace(/\{\*\}$/, '*')}`);
    }
  }
  return endpoints;
}

/** `/files/*` covers `/files` itself, the workspace's root. */
function coveredBy(tables: Set<string>, endpoint: string): boolean {
  return tables.has(endpoint) || tables.has(`${endpoint}/*`);
}

async function fetchDocument(): Promise<OpenApiDocument> {
  const api = await buildTestApi({ agentToken: 'agent-token-for-tests', capacity: 1 });
  try {
    assert.equal((await api.app.inject({ url: '/openapi.json' })).statusCode, 401, 'the document needs the agent token');
    const answer = await api.app.inject({ url: '/openapi.json', headers: { authorization: 'Bearer agent-token-for-tests' } });
    assert.equal(answer.statusCode, 200);
    assert.match(String(answer.headers['content-type']), /^application\/json/);
    return answer.json<OpenApiDocument>();
  } finally {
    await api.close();
  }
}

test('the document is OpenAPI 3: version, info, and every operation with responses and its path parameters', async () => {
  const document = await fetchDocument();
  assert.match(document.openapi, /^3\.\d+\.\d+$/);
  assert.equal(typeof document.info.title, 'string');
  assert.equal(document.info.version, '0.0.0-test');
  for (const [path, item] of Object.entries(document.paths)) {
    assert.ok(path.startsWith('/'), path);
    const templated = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
    for (const [method, operation] of Object.entries(item)) {
      assert.ok(HTTP_METHODS.includes(method), `${path}: ${method} is not an HTTP method`);
      assert.equal(typeof operation.responses, 'object', `${method} ${path} has responses`);
      const inPath = (operation.parameters ?? []).filter((p) => p.in === 'path').map((p) => p.name);
      assert.deepEqual(inPath.sort(), [...templated].sort(), `${method} ${path} declares its path parameters`);
    }
  }
});

test("the document lists exactly the README's API table", async () => {
  const document = documentEndpoints(await fetchDocument());
  const readme = tableEndpoints(readFileSync(`${root}README.md`, 'utf8').split('## API')[1]?.split('\n## ')[0] ?? '');
  assert.ok(readme.size > 10, 'the README table was read');
  for (const endpoint of readme) assert.ok(document.has(endpoint), `README row ${endpoint} is in the document`);
  for (const endpoint of document) assert.ok(coveredBy(readme, endpoint), `document's ${endpoint} is a README row`);
});

test("every endpoint of the operators' guide is in the document", async () => {
  const document = documentEndpoints(await fetchDocument());
  const guide = tableEndpoints(readFileSync(`${root}../shared/seed/testing-guide.md`, 'utf8'));
  for (const expected of [
    'GET /health',
    'GET /info',
    'POST /vms',
    'DELETE /vms/{workshopID}/{seatID}',
    'GET /proxy/{workshopID}/{seatID}/terminal',
  ]) {
    assert.ok(guide.has(expected), `the guide's table was read (${expected})`);
  }
  for (const endpoint of guide) assert.ok(document.has(endpoint), `guide's ${endpoint} is in the document`);
});
