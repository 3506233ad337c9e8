// The cgroup files and values a VM's size turns into, on v1 and v2 (pure).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { memoryLimitBytes, vmCgroupSettings } from './limits.ts';

describe('vmCgroupSettings', () => {
  test('cgroup v2: cpu.max of vcpus full CPUs, memory.max with the overhead, no swap', () => {
    assert.deepEqual(vmCgroupSettings(2, { vcpus: 2, memoryMb: 512, overheadMb: 64 }), [
      { controller: 'cpu', file: 'cpu.max', value: '200000 100000', optional: false },
      { controller: 'memory', file: 'memory.max', value: String(576 * 1024 * 1024), optional: false },
      { controller: 'memory', file: 'memory.swap.max', value: '0', optional: true },
    ]);
  });

  test('cgroup v1: period before quota, limit before memsw (same value: no swap)', () => {
    assert.deepEqual(vmCgroupSettings(1, { vcpus: 4, memoryMb: 1024 }), [
      { controller: 'cpu', file: 'cpu.cfs_period_us', value: '100000', optional: false },
      { controller: 'cpu', file: 'cpu.cfs_quota_us', value: '400000', optional: false },
      { controller: 'memory', file: 'memory.limit_in_bytes', value: '1073741824', optional: false },
      { controller: 'memory', file: 'memory.memsw.limit_in_bytes', value: '1073741824', optional: true },
    ]);
  });

  test('refuses sizes that make no limit', () => {
    assert.throws(() => vmCgroupSettings(2, { vcpus: 0, memoryMb: 512 }), /vcpus/);
    assert.throws(() => vmCgroupSettings(2, { vcpus: 1.5, memoryMb: 512 }), /vcpus/);
    assert.throws(() => vmCgroupSettings(1, { vcpus: 1, memoryMb: 0 }), /memoryMb/);
    assert.throws(() => vmCgroupSettings(1, { vcpus: 1, memoryMb: 64, overheadMb: -1 }), /overheadMb/);
  });

  test('memoryLimitBytes', () => {
    assert.equal(memoryLimitBytes({ vcpus: 1, memoryMb: 64 }), 64 * 1024 * 1024);
    assert.equal(memoryLimitBytes({ vcpus: 1, memoryMb: 8192, overheadMb: 128 }), 8320 * 1024 * 1024);
  });
});
