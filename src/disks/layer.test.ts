import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { diskUsageBytes, ensureLayerDisk, LAYER_LABEL } from './layer.ts';

test('a layer is a labelled ext4 of the asked size that costs almost nothing on disk', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ct-layer-'));
  try {
    const path = join(dir, 'layer.ext4');
    await ensureLayerDisk(path, 4096);
    assert.equal(statSync(path).size, 4096 * 1024 * 1024);
    assert.ok((await diskUsageBytes(path)) < 32 * 1024 * 1024, 'sparse');
    assert.equal(execFileSync('blkid', ['-o', 'value', '-s', 'LABEL', path], { encoding: 'utf8' }).trim(), LAYER_LABEL);
    assert.equal(execFileSync('blkid', ['-o', 'value', '-s', 'TYPE', path], { encoding: 'utf8' }).trim(), 'ext4');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('an existing layer is kept as it is (a restart must not wipe learner files); a cut-off creation is redone', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ct-layer-'));
  try {
    const path = join(dir, 'layer.ext4');
    await ensureLayerDisk(path, 256);
    appendFileSync(path, 'learner data');
    const before = statSync(path);
    await ensureLayerDisk(path, 256);
    const after = statSync(path);
    assert.equal(after.ino, before.ino);
    assert.equal(after.size, before.size);
    // A creation that died half-way leaves only its temp file; the next attempt starts over.
    const other = join(dir, 'other.ext4');
    writeFileSync(`${other}.tmp`, 'half made');
    await ensureLayerDisk(other, 256);
    assert.equal(existsSync(`${other}.tmp`), false);
    assert.equal(execFileSync('blkid', ['-o', 'value', '-s', 'LABEL', other], { encoding: 'utf8' }).trim(), LAYER_LABEL);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
