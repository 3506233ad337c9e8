// Per-VM user names (pure). Creating the users needs root: the QEMU integration tests do (perVmUser is on as root).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { vmUserName } from './vm-users.ts';

test('VM user names are valid, short, and distinct per TAP', () => {
  const a = vmUserName('ctc0a8640b');
  assert.equal(a, 'ctvm-ctc0a8640b');
  assert.match(a, /^[a-z][a-z0-9-]{0,31}$/);
  assert.ok(a.length <= 15);
  assert.notEqual(vmUserName('ctc0a8640b'), vmUserName('ctc0a8640c'));
});
