import { test } from 'node:test';
import assert from 'node:assert/strict';
import { escapesWorkspace } from './routes.ts';

test('paths that climb out of the workspace are recognised however they are encoded', () => {
  for (const path of [
    '/../etc/passwd',
    '/%2e%2e/etc',
    '/..%2fetc',
    '/%252e%252e/etc',
    '/a/%25252e%25252e/b',
    '/a\\..\\b',
    '/x%00y',
    '/%E0%A4%A',
  ]) {
    assert.equal(escapesWorkspace(path), true, path);
  }
  for (const path of ['/', '/notes/hello.txt', '/a..b/c', '/..hidden', '/%20space', '/d%C3%A9j%C3%A0']) {
    assert.equal(escapesWorkspace(path), false, path);
  }
});
