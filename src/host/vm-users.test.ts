// Per-VM user names (pure). Creating the users needs root: the QEMU integration tests do (perVmUser is on as root).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { lookupVmUser, vmUserName } from './vm-users.ts';

test('VM user names are valid, short, and distinct per TAP', () => {
  const a = vmUserName('ctc0a8640b');
  assert.equal(a, 'ctvm-ctc0a8640b');
  assert.match(a, /^[a-z][a-z0-9-]{0,31}$/);
  assert.ok(a.length <= 15);
  assert.notEqual(vmUserName('ctc0a8640b'), vmUserName('ctc0a8640c'));
});

test('a VM user is looked up in the passwd file by its exact name', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ct-passwd-'));
  try {
    const passwd = join(dir, 'passwd');
    writeFileSync(
      passwd,
      'root:x:0:0:root:/root:/bin/bash\nctvm-ctc0a8640b:x:998:997:ClaraTeach VM:/nonexistent:/usr/sbin/nologin\nctvm-ctc0a8640bb:x:5:5::/:/bin/false\nbroken:x::\n',
    );
    assert.deepEqual(await lookupVmUser('ctvm-ctc0a8640b', passwd), { name: 'ctvm-ctc0a8640b', uid: 998, gid: 997 });
    assert.equal(await lookupVmUser('ctvm-ctc0a8640c', passwd), undefined);
    assert.equal(await lookupVmUser('ctvm', passwd), undefined);
    assert.equal(await lookupVmUser('broken', passwd), undefined);
    assert.equal(await lookupVmUser('root', join(dir, 'missing')), undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
