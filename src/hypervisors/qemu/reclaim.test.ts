// The QEMU driver's orphan sweep on a fake cgroup v2 tree (no root, no QEMU): the cgroups no kept VM
// has are removed and counted, one log line each.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { createFakeCgroupV2 } from '../../../test/support/cgroups/fake-cgroupfs.ts';
import { capturingLogger } from '../../../test/support/logs.ts';
import { qemuDriverWithVerdict } from './index.ts';

test('reclaim removes the cgroups no kept VM has and returns { cgroups }', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'qemu-reclaim-'));
  try {
    const fake = createFakeCgroupV2(dir);
    const parent = join(fake.root, 'clarateach');
    for (const name of ['my-test.1', 'gone.2']) mkdirSync(join(parent, name), { recursive: true });
    const logs: string[] = [];
    const driver = qemuDriverWithVerdict(
      { accel: 'tcg', reason: 'test', key: '', checkedAt: '' },
      { imagesDir: dir, stateDir: dir, cgroup: { layout: fake.layout }, log: capturingLogger(logs) },
    );
    assert.deepEqual(await driver.reclaim?.(new Set(['my-test.1'])), { cgroups: 1 });
    assert.ok(existsSync(join(parent, 'my-test.1')), 'the kept VM keeps its cgroup');
    assert.equal(existsSync(join(parent, 'gone.2')), false);
    assert.equal(logs.filter((m) => m.includes('removed cgroup gone.2')).length, 1, logs.join('\n'));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
