// Spare layers: a create takes one made ahead (a rename), each VM gets a layer of its own, the
// spares are made again in the background, and spares of sizes or sources no longer asked for go.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LAYER_LABEL } from './layer.ts';
import { SpareLayers } from './spare-layers.ts';

function label(path: string): string {
  return execFileSync('blkid', ['-o', 'value', '-s', 'LABEL', path], { encoding: 'utf8' }).trim();
}

function sparesOf(dir: string, kind: string): string[] {
  return existsSync(join(dir, kind)) ? readdirSync(join(dir, kind)).filter((n) => n.endsWith('.ext4')) : [];
}

test('empty layers: the first create makes its own, later ones take spares; every VM gets a layer of its own', async () => {
  const root = mkdtempSync(join(tmpdir(), 'ct-spares-'));
  try {
    const spares = new SpareLayers({ dir: join(root, 'spares'), perKind: 2 });
    const vms = join(root, 'vms');
    mkdirSync(vms);
    await spares.ensureLayer(join(vms, 'a.ext4'), 256);
    await spares.idle();
    const ready = sparesOf(join(root, 'spares'), 'empty-256mib');
    assert.equal(ready.length, 2, 'two spares made in the background');
    const spareInode = statSync(join(root, 'spares', 'empty-256mib', ready[0] ?? '')).ino;

    // Three creates at once: two take the spares, the third makes its own; none shares a file.
    await Promise.all(['b', 'c', 'd'].map((n) => spares.ensureLayer(join(vms, `${n}.ext4`), 256)));
    const inodes = ['a', 'b', 'c', 'd'].map((n) => statSync(join(vms, `${n}.ext4`)).ino);
    assert.equal(new Set(inodes).size, 4);
    assert.ok(inodes.includes(spareInode), 'a spare was renamed into place');
    for (const n of ['a', 'b', 'c', 'd']) {
      assert.equal(label(join(vms, `${n}.ext4`)), LAYER_LABEL);
      assert.equal(statSync(join(vms, `${n}.ext4`)).size, 256 * 1024 * 1024);
    }
    await spares.idle();
    assert.equal(sparesOf(join(root, 'spares'), 'empty-256mib').length, 2, 'made again');

    // An existing layer is never replaced (a restart must not wipe learner files).
    writeFileSync(join(vms, 'kept.ext4'), 'learner data');
    await spares.ensureLayer(join(vms, 'kept.ext4'), 256);
    assert.equal(readFileSync(join(vms, 'kept.ext4'), 'utf8'), 'learner data');

    // Another size (VM_DISK_MB changed): the old size's spares go.
    await spares.ensureLayer(join(vms, 'e.ext4'), 128);
    await spares.idle();
    assert.equal(statSync(join(vms, 'e.ext4')).size, 128 * 1024 * 1024);
    assert.equal(existsSync(join(root, 'spares', 'empty-256mib')), false);
    assert.equal(sparesOf(join(root, 'spares'), 'empty-128mib').length, 2);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('copies of a snapshot layer: spares hold its content; a remade or removed source is never served stale', async () => {
  const root = mkdtempSync(join(tmpdir(), 'ct-spares-'));
  try {
    const dir = join(root, 'spares');
    const spares = new SpareLayers({ dir, perKind: 1 });
    const source = join(root, 'snapshot-layer.ext4');
    writeFileSync(source, 'first snapshot');
    await spares.copyLayer(source, join(root, 'a.ext4'));
    await spares.idle();
    await spares.copyLayer(source, join(root, 'b.ext4'));
    assert.equal(readFileSync(join(root, 'b.ext4'), 'utf8'), 'first snapshot');
    await spares.idle();
    const [firstKind] = readdirSync(dir);

    // The snapshot is made again at the same path: its new content, and the old spares go.
    rmSync(source);
    writeFileSync(source, 'second snapshot');
    await spares.copyLayer(source, join(root, 'c.ext4'));
    assert.equal(readFileSync(join(root, 'c.ext4'), 'utf8'), 'second snapshot');
    await spares.idle();
    assert.deepEqual(
      readdirSync(dir).filter((k) => k === firstKind),
      [],
    );
    await spares.copyLayer(source, join(root, 'd.ext4'));
    assert.equal(readFileSync(join(root, 'd.ext4'), 'utf8'), 'second snapshot');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test("copies made ahead of a snapshot's first seat: that seat takes one", async () => {
  const root = mkdtempSync(join(tmpdir(), 'ct-spares-'));
  try {
    const dir = join(root, 'spares');
    const spares = new SpareLayers({ dir, perKind: 2 });
    const source = join(root, 'snapshot-layer.ext4');
    writeFileSync(source, 'the snapshot');
    await spares.prepareCopies(source);
    await spares.idle();
    const [kind = ''] = readdirSync(dir);
    const made = sparesOf(dir, kind);
    assert.equal(made.length, 2, 'two copies before any seat asked');
    const madeInodes = made.map((n) => statSync(join(dir, kind, n)).ino);
    await spares.copyLayer(source, join(root, 'first-seat.ext4'));
    assert.ok(madeInodes.includes(statSync(join(root, 'first-seat.ext4')).ino), 'the first seat took a copy made ahead');
    assert.equal(readFileSync(join(root, 'first-seat.ext4'), 'utf8'), 'the snapshot');
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test('a spare cut off half-made is never handed out, and is removed; spares can be made ahead at start', async () => {
  const root = mkdtempSync(join(tmpdir(), 'ct-spares-'));
  try {
    const dir = join(root, 'spares');
    mkdirSync(join(dir, 'empty-64mib'), { recursive: true });
    writeFileSync(join(dir, 'empty-64mib', '.making-abc.ext4'), 'half made');
    const spares = new SpareLayers({ dir, perKind: 1 });
    await spares.ensureLayer(join(root, 'a.ext4'), 64);
    assert.equal(label(join(root, 'a.ext4')), LAYER_LABEL);
    await spares.idle();
    assert.deepEqual(
      readdirSync(join(dir, 'empty-64mib')).filter((n) => n.startsWith('.making-')),
      [],
    );
    // Made ahead at the agent's start: even the first create of that size takes a spare.
    const early = new SpareLayers({ dir: join(root, 'early'), perKind: 1 });
    early.prefill(64);
    await early.idle();
    const [spare] = sparesOf(join(root, 'early'), 'empty-64mib');
    const inode = statSync(join(root, 'early', 'empty-64mib', spare ?? '')).ino;
    await early.ensureLayer(join(root, 'first.ext4'), 64);
    assert.equal(statSync(join(root, 'first.ext4')).ino, inode);
    await early.idle();
    // perKind 0: nothing is made ahead.
    const none = new SpareLayers({ dir: join(root, 'none'), perKind: 0 });
    await none.ensureLayer(join(root, 'b.ext4'), 64);
    await none.idle();
    assert.equal(existsSync(join(root, 'none')), false);
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});
