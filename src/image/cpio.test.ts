// The newc cpio writer, checked by unpacking and listing its archives with cpio(1).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readlinkSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { writeCpio } from './cpio.ts';

test('newc archive is read back by cpio(1) with names, modes, links and contents', () => {
  const archive = writeCpio([
    { type: 'dir', path: 'bin' },
    { type: 'file', path: 'bin/hello', data: Buffer.from('#!/bin/sh\necho hi\n'), mode: 0o755 },
    { type: 'symlink', path: 'bin/hi', target: 'hello' },
    { type: 'dir', path: 'etc', mode: 0o700 },
    { type: 'file', path: '/etc/odd-size', data: Buffer.from('12345') },
  ]);
  assert.equal(archive.length % 4, 0);
  assert.match(archive.subarray(archive.length - 140).toString('latin1'), /TRAILER!!!/);
  const dir = mkdtempSync(join(tmpdir(), 'ct-cpio-'));
  try {
    execFileSync('cpio', ['-idm', '--quiet'], { cwd: dir, input: archive });
    assert.equal(readFileSync(join(dir, 'bin/hello'), 'utf8'), '#!/bin/sh\necho hi\n');
    assert.equal(statSync(join(dir, 'bin/hello')).mode & 0o777, 0o755);
    assert.equal(readlinkSync(join(dir, 'bin/hi')), 'hello');
    assert.equal(statSync(join(dir, 'etc')).mode & 0o777, 0o700);
    assert.equal(readFileSync(join(dir, 'etc/odd-size'), 'utf8'), '12345');
    const listing = execFileSync('cpio', ['-itv', '--quiet'], { input: archive, encoding: 'utf8' });
    assert.match(listing, /root\s+root/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the same entries give the same bytes; bad paths are refused', () => {
  const entries = [{ type: 'file', path: 'a', data: Buffer.from('x') }] as const;
  assert.ok(writeCpio(entries).equals(writeCpio(entries)));
  assert.throws(() => writeCpio([{ type: 'dir', path: '../escape' }]), /bad entry path/);
  assert.throws(() => writeCpio([{ type: 'dir', path: '/' }]), /bad entry path/);
});
