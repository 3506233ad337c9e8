// The dependency direction between the agent's parts (architecture.js) holds and is enforced:
// the map has no cycle and covers every folder of src/, and the linter refuses an import that
// would make a cycle, reach the composition root, or pull agent code into the guest.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { ESLint } from 'eslint';
import { PARTS } from '../../architecture.js';

const root = new URL('../..', import.meta.url).pathname;
const parts = PARTS;

async function lintAs(filePath: string, code: string): Promise<string[]> {
  const eslint = new ESLint({ cwd: root });
  const [result] = await eslint.lintText(code, { filePath: join(root, filePath) });
  return (result?.messages ?? []).filter((m) => m.ruleId === 'import-x/no-restricted-paths').map((m) => m.message);
}

test('every folder of src/ is a part of the map, and the map has no cycle', () => {
  const folders = readdirSync(join(root, 'src')).filter((name) => statSync(join(root, 'src', name)).isDirectory());
  assert.deepEqual(folders.sort(), Object.keys(parts).sort());
  for (const [part, { mayImport }] of Object.entries(parts)) {
    for (const other of mayImport) assert.ok(other in parts, `${part} names unknown part ${other}`);
  }
  // Depth-first search for a back edge.
  const state = new Map<string, 'open' | 'done'>();
  const visit = (part: string, path: string[]): void => {
    if (state.get(part) === 'done') return;
    assert.notEqual(state.get(part), 'open', `cycle: ${[...path, part].join(' -> ')}`);
    state.set(part, 'open');
    for (const next of parts[part]?.mayImport ?? []) visit(next, [...path, part]);
    state.set(part, 'done');
  };
  for (const part of Object.keys(parts)) visit(part, []);
  assert.ok(!Object.values(parts).some((p) => p.mayImport.includes('cli')), 'nothing may import cli');
});

test('the linter refuses an import that closes a cycle between two parts', async () => {
  // hypervisors imports vms (the driver port); vms importing a driver back would be a cycle.
  const messages = await lintAs(
    'src/vms/cycle-demo.ts',
    "import { selectDriver } from '../hypervisors/select.ts';\nexport const d = selectDriver;\n",
  );
  assert.equal(messages.length, 1);
  assert.match(messages[0] ?? '', /src\/vms may import only src\/shared/);
});

test('the linter refuses a type-only import against the direction too', async () => {
  const messages = await lintAs(
    'src/proxy/demo.ts',
    "import type { VmRoutesOptions } from '../api/routes/vms.ts';\nexport type T = VmRoutesOptions;\n",
  );
  assert.equal(messages.length, 1);
});

test('nothing imports the composition root, and the guest imports nothing of the agent', async () => {
  assert.equal(
    (await lintAs('src/api/demo.ts', "import { startAgent } from '../cli/agent.ts';\nexport const s = startAgent;\n")).length,
    1,
  );
  assert.equal(
    (await lintAs('src/guest/files/demo.ts', "import { exists } from '../../shared/files.ts';\nexport const e = exists;\n")).length,
    1,
  );
  // The guest's own helpers are fine.
  assert.deepEqual(
    await lintAs('src/guest/files/demo.ts', "import { describeError } from '../shared/log.ts';\nexport const e = describeError;\n"),
    [],
  );
});

test('imports the map allows pass', async () => {
  assert.deepEqual(
    await lintAs('src/proxy/demo.ts', "import { toApiError } from '../http/errors.ts';\nexport const t = toApiError;\n"),
    [],
  );
});

test("the README's folder table lists every part with the imports the map allows", () => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const rows = new Map<string, string[]>();
  for (const match of readme.matchAll(/^\| `src\/([a-z-]+)` \| [^|]+ \| ([^|]*) \|$/gm)) {
    const cell = (match[2] ?? '').trim();
    rows.set(match[1] ?? '', cell === '—' ? [] : cell.split(',').map((p) => p.trim()));
  }
  assert.deepEqual([...rows.keys()].sort(), Object.keys(parts).sort());
  for (const [part, { mayImport }] of Object.entries(parts)) assert.deepEqual(rows.get(part), [...mayImport], `README row of src/${part}`);
});
