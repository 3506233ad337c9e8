// Request URLs in the log: the secrets in their queries masked.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { redactUrl } from './logger.ts';

test('a token in the query never reaches the log, however its name is spelled', () => {
  for (const url of ['/p?token=SECRET', '/p?a=1&token=SECRET&b=2', '/p?%74oken=SECRET', '/p?TOKEN=SECRET', '/p?to%6Ben=SECRET']) {
    const out = redactUrl(url);
    assert.ok(!out.includes('SECRET'), `${url} -> ${out}`);
    assert.match(out, /\[redacted\]/);
  }
  assert.equal(redactUrl('/?setup=SECRET&x=1'), '/?setup=[redacted]&x=1', "the server's sign-up code");
  assert.equal(redactUrl('/p?a=1&b=2'), '/p?a=1&b=2');
  assert.equal(redactUrl('/vms'), '/vms');
});
