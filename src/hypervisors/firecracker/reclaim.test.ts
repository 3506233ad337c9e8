// The Firecracker driver's orphan sweep on a fake cgroup v2 tree (no root): what it removes, what it
// leaves, the counts by kind it returns, and one log line per thing removed.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, test } from 'node:test';
import { createFakeCgroupV2, type FakeCgroupV2 } from '../../../test/support/cgroups/fake-cgroupfs.ts';
import { capturingLogger } from '../../../test/support/logs.ts';
import { firecrackerInstanceId } from './command.ts';
import { createFirecrackerDriver } from './index.ts';

let dir: string;
let fake: FakeCgroupV2;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'fc-reclaim-'));
  fake = createFakeCgroupV2(dir);
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

test('reclaim removes the cgroups no kept VM has, leaves the kept one and names it cannot own, and counts by kind', async () => {
  const parent = join(fake.root, 'clarateach');
  const kept = firecrackerInstanceId('my-test.1');
  const orphans = [firecrackerInstanceId('gone.2'), firecrackerInstanceId('gone.3')];
  // Plain directories: empty, so rmdir works on them as on a real cgroup without processes.
  for (const name of [kept, ...orphans, '_not-a-vm']) mkdirSync(join(parent, name), { recursive: true });
  const logs: string[] = [];
  const driver = await createFirecrackerDriver({
    firecrackerBin: 'firecracker',
    cgroup: { layout: fake.layout },
    log: capturingLogger(logs),
  });
  assert.ok(driver.reclaim);

  const counts = await driver.reclaim(new Set(['my-test.1']));

  assert.deepEqual(counts, { cgroups: 2, jails: 0, processes: 0 });
  assert.ok(existsSync(join(parent, kept)), 'the kept VM keeps its cgroup');
  for (const name of orphans) assert.equal(existsSync(join(parent, name)), false, `${name} removed`);
  assert.ok(existsSync(join(parent, '_not-a-vm')), 'a directory no VM id could name is left alone');
  for (const name of orphans) assert.equal(logs.filter((m) => m.includes(`removed cgroup ${name}`)).length, 1, logs.join('\n'));
  assert.deepEqual(await driver.reclaim(new Set(['my-test.1'])), { cgroups: 0, jails: 0, processes: 0 }, 'nothing left to remove');
});

test('reclaim with cgroups off removes nothing and counts nothing', async () => {
  const driver = await createFirecrackerDriver({ firecrackerBin: 'firecracker', cgroup: false });
  assert.deepEqual(await driver.reclaim?.(new Set()), { cgroups: 0, jails: 0, processes: 0 });
});
