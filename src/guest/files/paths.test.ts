// File-service helpers: request path parsing and confinement, byte ranges, content types.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, realpath, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { HttpError } from './errors.ts';
import { Workspace, isInside, parseRequestPath, parseWorkspacePath, resolveLoose } from './paths.ts';
import { parseRange } from './range.ts';
import { contentTypeFor } from './mime.ts';

const code = (fn: () => unknown): string | undefined => {
  try {
    fn();
    return undefined;
  } catch (err) {
    return err instanceof HttpError ? err.code : 'other';
  }
};

describe('parseRequestPath', () => {
  it('decodes ordinary paths', () => {
    assert.deepEqual(parseRequestPath(''), []);
    assert.deepEqual(parseRequestPath('a/b/'), ['a', 'b']);
    assert.deepEqual(parseRequestPath('a%20b/./c'), ['a b', 'c']);
    assert.deepEqual(parseRequestPath('100%25.txt'), ['100%.txt']);
    assert.deepEqual(parseRequestPath('..foo/bar..'), ['..foo', 'bar..']);
  });

  it('refuses traversal, absolute paths, NUL and double encoding', () => {
    for (const p of [
      '..',
      '../x',
      'a/../../x',
      '%2e%2e/x',
      '%2E%2e',
      '..%2fx',
      'a%2F..%2F..',
      '%252e%252e/x',
      '%25252e%25252e',
      '/etc',
      '%2Fetc',
      'a%00b',
      '..%5cx',
      '%255c..%255c',
    ]) {
      assert.equal(
        code(() => parseRequestPath(p)),
        'forbidden_path',
        p,
      );
    }
    assert.equal(
      code(() => parseRequestPath('%zz')),
      'invalid_request',
    );
  });

  it('parses body paths without decoding', () => {
    assert.deepEqual(parseWorkspacePath('/a//b/'), ['a', 'b']);
    assert.deepEqual(parseWorkspacePath('%2e%2e'), ['%2e%2e']);
    assert.equal(
      code(() => parseWorkspacePath('/a/../..')),
      'forbidden_path',
    );
  });
});

describe('confinement', () => {
  let root: string;
  before(async () => {
    root = await realpath(await mkdtemp(path.join(os.tmpdir(), 'ct-paths-')));
    await mkdir(path.join(root, 'ws', 'd'), { recursive: true });
    await symlink('/etc', path.join(root, 'ws', 'etc'));
    await symlink('d', path.join(root, 'ws', 'dlink'));
    await symlink('../../outside/x', path.join(root, 'ws', 'd', 'dangling'));
    await symlink('loop', path.join(root, 'ws', 'loop'));
  });
  after(() => rm(root, { recursive: true, force: true }));

  it('isInside compares whole components', () => {
    assert.ok(isInside('/a/b', '/a'));
    assert.ok(isInside('/a', '/a'));
    assert.ok(!isInside('/ab', '/a'));
    assert.ok(isInside('/x', '/'));
  });

  it('resolves missing tails and dangling links', async () => {
    const ws = path.join(root, 'ws');
    assert.equal(await resolveLoose(path.join(ws, 'dlink', 'new', 'file')), path.join(ws, 'd', 'new', 'file'));
    assert.equal(await resolveLoose(path.join(ws, 'd', 'dangling')), path.join(root, 'outside', 'x'));
  });

  it('confines through and entry resolution', async () => {
    const ws = await Workspace.open(path.join(root, 'ws'));
    assert.equal(await ws.resolveThrough(['dlink', 'f']), path.join(root, 'ws', 'd', 'f'));
    await assert.rejects(ws.resolveThrough(['etc', 'passwd']), (e: unknown) => e instanceof HttpError && e.code === 'forbidden_path');
    await assert.rejects(ws.resolveThrough(['d', 'dangling']), (e: unknown) => e instanceof HttpError && e.code === 'forbidden_path');
    await assert.rejects(ws.resolveThrough(['loop']), (e: unknown) => e instanceof HttpError && e.code === 'invalid_request');
    assert.equal(await ws.resolveEntry(['etc']), path.join(root, 'ws', 'etc'));
    await assert.rejects(ws.resolveEntry(['etc', 'passwd']), (e: unknown) => e instanceof HttpError && e.code === 'forbidden_path');
  });
});

describe('parseRange', () => {
  it('handles single ranges', () => {
    assert.deepEqual(parseRange(undefined, 10), { kind: 'none' });
    assert.deepEqual(parseRange('bytes=0-4', 10), { kind: 'range', start: 0, end: 4 });
    assert.deepEqual(parseRange('bytes=5-', 10), { kind: 'range', start: 5, end: 9 });
    assert.deepEqual(parseRange('bytes=-3', 10), { kind: 'range', start: 7, end: 9 });
    assert.deepEqual(parseRange('bytes=-30', 10), { kind: 'range', start: 0, end: 9 });
    assert.deepEqual(parseRange('bytes=8-100', 10), { kind: 'range', start: 8, end: 9 });
    assert.deepEqual(parseRange('bytes=10-', 10), { kind: 'unsatisfiable' });
    assert.deepEqual(parseRange('bytes=-0', 10), { kind: 'unsatisfiable' });
    assert.deepEqual(parseRange('bytes=0-', 0), { kind: 'unsatisfiable' });
    assert.deepEqual(parseRange('bytes=5-2', 10), { kind: 'none' });
    assert.deepEqual(parseRange('bytes=0-1,4-5', 10), { kind: 'none' });
    assert.deepEqual(parseRange('items=0-1', 10), { kind: 'none' });
  });
});

describe('contentTypeFor', () => {
  it('maps a few extensions', () => {
    assert.equal(contentTypeFor('a.TXT'), 'text/plain; charset=utf-8');
    assert.equal(contentTypeFor('Makefile'), 'text/plain; charset=utf-8');
    assert.equal(contentTypeFor('.gitignore'), 'text/plain; charset=utf-8');
    assert.equal(contentTypeFor('x.png'), 'image/png');
    assert.equal(contentTypeFor('x.unknown'), 'application/octet-stream');
  });
});
