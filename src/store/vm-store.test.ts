import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { VmStore } from './vm-store.ts';
import type { Addressing } from '../vms/ports.ts';
import { allocateIp, intToIp, parseCidr } from '../network/cidr.ts';
import { macForIp, tapNameForIp } from '../network/tap.ts';

const cidr = parseCidr('192.168.100.1/24');
const addressing: Addressing = { allocate: (s, u) => allocateIp(cidr, s, u), ipText: intToIp, mac: macForIp, tapName: tapNameForIp };

function withStore(fn: (store: VmStore, path: string) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'ct-store-'));
  const path = join(dir, 'state', 'agent.db');
  const store = new VmStore(path);
  try {
    fn(store, path);
  } finally {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

const req = (workshopId: string, seatId: number) => ({
  workshopId,
  seatId,
  vcpus: 1,
  memoryMb: 512,
  hypervisor: 'qemu',
  template: 'default',
  buildId: 'b1',
});

test('reserve allocates the seat address and refuses the same seat twice', () => {
  withStore((store) => {
    const first = store.reserve(req('ws-a', 1), { capacity: 10, memoryBudgetMb: 1e9 }, addressing, 1000);
    assert.ok(first.ok);
    assert.equal(first.vm.ip, '192.168.100.11');
    assert.equal(first.vm.status, 'creating');
    assert.deepEqual(store.reserve(req('ws-a', 1), { capacity: 10, memoryBudgetMb: 1e9 }, addressing, 1001), {
      ok: false,
      reason: 'exists',
    });
  });
});

test('two workshops with the same seat get different addresses', () => {
  withStore((store) => {
    const a = store.reserve(req('ws-a', 1), { capacity: 10, memoryBudgetMb: 1e9 }, addressing, 1);
    const b = store.reserve(req('ws-b', 1), { capacity: 10, memoryBudgetMb: 1e9 }, addressing, 1);
    assert.ok(a.ok && b.ok);
    assert.notEqual(a.vm.ip, b.vm.ip);
    assert.notEqual(a.vm.tapName, b.vm.tapName);
    assert.notEqual(a.vm.mac, b.vm.mac);
  });
});

test('capacity counts every VM', () => {
  withStore((store) => {
    assert.ok(store.reserve(req('ws', 1), { capacity: 2, memoryBudgetMb: 1e9 }, addressing, 1).ok);
    assert.ok(store.reserve(req('ws', 2), { capacity: 2, memoryBudgetMb: 1e9 }, addressing, 1).ok);
    assert.deepEqual(store.reserve(req('ws', 3), { capacity: 2, memoryBudgetMb: 1e9 }, addressing, 1), {
      ok: false,
      reason: 'at_capacity',
    });
  });
});

test('memory is not overcommitted beyond the budget', () => {
  withStore((store) => {
    const limits = { capacity: 10, memoryBudgetMb: 1200 };
    assert.ok(store.reserve(req('ws', 1), limits, addressing, 1).ok);
    assert.ok(store.reserve(req('ws', 2), limits, addressing, 1).ok);
    assert.deepEqual(store.reserve(req('ws', 3), limits, addressing, 1), { ok: false, reason: 'memory', committedMb: 1024 });
  });
});

test('state survives reopening the database file', () => {
  withStore((store, path) => {
    const r = store.reserve(req('ws', 4), { capacity: 10, memoryBudgetMb: 1e9 }, addressing, 5);
    assert.ok(r.ok);
    store.markRunning('ws', 4, 1234, 99, 6);
    const again = new VmStore(path);
    try {
      const vm = again.get('ws', 4);
      assert.equal(vm?.status, 'running');
      assert.equal(vm?.pid, 1234);
      assert.equal(vm?.ip, '192.168.100.14');
      assert.equal(vm?.runningAt, 6);
    } finally {
      again.close();
    }
  });
});

test('a stored address is kept, never recomputed, and freed on remove', () => {
  withStore((store) => {
    assert.ok(store.reserve(req('ws-a', 1), { capacity: 10, memoryBudgetMb: 1e9 }, addressing, 1).ok);
    const b = store.reserve(req('ws-b', 1), { capacity: 10, memoryBudgetMb: 1e9 }, addressing, 1);
    assert.ok(b.ok);
    store.remove('ws-a', 1);
    assert.equal(store.get('ws-b', 1)?.ip, b.vm.ip);
    const c = store.reserve(req('ws-c', 1), { capacity: 10, memoryBudgetMb: 1e9 }, addressing, 1);
    assert.ok(c.ok);
    assert.equal(c.vm.ip, '192.168.100.11');
    assert.deepEqual(
      store.list('ws-b').map((v) => v.seatId),
      [1],
    );
    assert.equal(store.count(), 2);
  });
});

test('restart bookkeeping: restarts counted, readiness reset', () => {
  withStore((store) => {
    assert.ok(store.reserve(req('ws', 1), { capacity: 10, memoryBudgetMb: 1e9 }, addressing, 1).ok);
    store.markRunning('ws', 1, 10, 20, 2);
    store.markReady('ws', 1, 3);
    assert.equal(store.get('ws', 1)?.readyAt, 3);
    store.markRestarted('ws', 1, 11, 21);
    const vm = store.get('ws', 1);
    assert.equal(vm?.restarts, 1);
    assert.equal(vm?.readyAt, null);
    assert.equal(vm?.pid, 11);
    store.markFailed('ws', 1, 'kernel missing');
    assert.equal(store.get('ws', 1)?.status, 'failed');
    assert.equal(store.get('ws', 1)?.lastError, 'kernel missing');
  });
});

test('a VM keeps the template and build it was made from; an older database gains the columns, its VMs on the default template', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ct-store-'));
  const path = join(dir, 'agent.db');
  try {
    const store = new VmStore(path);
    const made = store.reserve(
      { ...req('ws-t', 1), template: 'python', buildId: '20261203T0700-abcd' },
      { capacity: 5, memoryBudgetMb: 1e9 },
      addressing,
      1,
    );
    store.close();
    assert.ok(made.ok);
    assert.deepEqual([made.vm.template, made.vm.buildId], ['python', '20261203T0700-abcd']);
    // An agent.db from before templates: the table without the two columns.
    const old = new Database(path);
    old.exec('DROP TABLE vms');
    old.exec(`CREATE TABLE vms (workshop_id TEXT NOT NULL, seat_id INTEGER NOT NULL, ip TEXT NOT NULL UNIQUE, ip_int INTEGER NOT NULL UNIQUE,
      mac TEXT NOT NULL UNIQUE, tap_name TEXT NOT NULL UNIQUE, vcpus INTEGER NOT NULL, memory_mb INTEGER NOT NULL, hypervisor TEXT NOT NULL,
      status TEXT NOT NULL, pid INTEGER, pid_start_time INTEGER, created_at INTEGER NOT NULL, running_at INTEGER, ready_at INTEGER,
      restarts INTEGER NOT NULL DEFAULT 0, last_error TEXT, PRIMARY KEY (workshop_id, seat_id))`);
    old
      .prepare(
        `INSERT INTO vms VALUES ('old', 1, '192.168.100.11', 3232261131, '06:00:c0:a8:64:0b', 'ctc0a8640b', 1, 512, 'qemu', 'running', 7, 1, 5, 6, NULL, 0, NULL)`,
      )
      .run();
    old.close();
    const reopened = new VmStore(path);
    const vm = reopened.get('old', 1);
    reopened.close();
    assert.deepEqual([vm?.template, vm?.buildId, vm?.pid], ['default', '', 7]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
