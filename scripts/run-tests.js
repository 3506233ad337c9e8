#!/usr/bin/env node
// Runs every test: the unit tests (src/**, test/support/**, test/architecture/**), while the guest
// image is built (or found up to date) in .cache/images, then each integration test file
// (test/integration/*.test.ts, real guests) inside a network namespace of its own.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const unitOnly = process.argv.includes('--unit');
const imagesDir = process.env.CLARATEACH_TEST_IMAGES || join(root, '.cache/images');

function find(dir, suffix) {
  let out = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out = out.concat(find(path, suffix));
    else if (name.endsWith(suffix)) out.push(path);
  }
  return out.sort();
}

function step(title, command, args) {
  process.stdout.write(`\n### ${title}\n`);
  const result = spawnSync(command, args, {
    cwd: root,
    stdio: 'inherit',
    env: { ...process.env, CLARATEACH_TEST_IMAGES: imagesDir },
  });
  return result.status === 0;
}

// Each group also writes a TAP report, whose counts make the closing `N passed, N failed` line.
const reports = mkdtempSync(join(tmpdir(), 'clarateach-tests-'));
let reportCount = 0;
function nodeTest() {
  const report = join(reports, `${reportCount++}.tap`);
  return [
    '--import',
    'tsx',
    '--test',
    '--test-concurrency=1',
    '--test-reporter=spec',
    '--test-reporter-destination=stdout',
    '--test-reporter=tap',
    `--test-reporter-destination=${report}`,
  ];
}
/** Runs a group in the background with its output kept; `finish` prints it and says whether it passed. */
function background(title, command, args) {
  const log = join(reports, `${reportCount}.log`);
  const out = openSync(log, 'w');
  const child = spawn(command, args, {
    cwd: root,
    stdio: ['ignore', out, out],
    env: { ...process.env, CLARATEACH_TEST_IMAGES: imagesDir },
  });
  const done = new Promise((resolve) => child.on('close', (code) => resolve(code === 0)));
  return async () => {
    const passedGroup = await done;
    closeSync(out);
    process.stdout.write(`\n### ${title}\n${readFileSync(log, 'utf8')}`);
    return passedGroup;
  };
}

let ok = true;
const unit = [
  ...find(join(root, 'src'), '.test.ts'),
  ...find(join(root, 'test/support'), '.test.ts'),
  ...find(join(root, 'test/architecture'), '.test.ts'),
].map((p) => relative(root, p));
// Unit tests need no guest image: they run while the image is built.
const unitDone = background(`unit tests (${unit.length} files)`, process.execPath, [...nodeTest(), ...unit]);
if (!unitOnly) {
  ok = step('guest image', process.execPath, [join(root, 'bin/clarateach.js'), 'image', 'build', '--images-dir', imagesDir]) && ok;
}
ok = (await unitDone()) && ok;
if (!unitOnly) {
  for (const file of find(join(root, 'test/integration'), '.test.ts')) {
    const rel = relative(root, file);
    ok =
      step(`integration: ${rel} (own network namespace)`, join(root, 'scripts/in-netns.sh'), [process.execPath, ...nodeTest(), rel]) && ok;
  }
}
let passed = 0;
let failed = 0;
for (const name of readdirSync(reports)) {
  const tap = readFileSync(join(reports, name), 'utf8');
  passed += Number(/^# pass (\d+)/m.exec(tap)?.[1] ?? 0);
  failed += Number(/^# fail (\d+)/m.exec(tap)?.[1] ?? 0);
}
rmSync(reports, { recursive: true, force: true });
if (!ok && failed === 0) failed = 1; // a group that crashed before reporting still counts
process.stdout.write(ok ? '\nall test groups passed\n' : '\nsome test groups FAILED\n');
process.stdout.write(`${passed} passed, ${failed} failed\n`);
process.exit(ok ? 0 : 1);
