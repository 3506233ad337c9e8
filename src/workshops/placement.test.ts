// Placement: spread takes the least loaded worker, pack the fullest with room; full or
// memory-short workers are never chosen.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseWorker } from './placement.ts';
import { JOIN_CODE_ALPHABET, newJoinCode, normalizeJoinCode, newWorkshopId } from './codes.ts';

const w = (id: string, seats: number, capacity = 10, memoryMb: number | null = null, seatMemoryMb = 0) => ({
  id,
  seats,
  capacity,
  memoryMb,
  seatMemoryMb,
});

test('spread, pack, and no room', () => {
  assert.equal(chooseWorker([w('a', 5), w('b', 2)], 'spread', 512)?.id, 'b');
  assert.equal(chooseWorker([w('a', 5), w('b', 2)], 'pack', 512)?.id, 'a');
  assert.equal(chooseWorker([w('a', 10), w('b', 2)], 'pack', 512)?.id, 'b', 'a full worker is skipped');
  assert.equal(chooseWorker([w('a', 1, 10, 1024, 768)], 'spread', 512), undefined, 'not enough memory');
  assert.equal(chooseWorker([], 'spread', 512), undefined);
  assert.equal(chooseWorker([w('b', 1), w('a', 1)], 'spread', 512)?.id, 'a', 'ties go to the lower id');
});

test('join codes: 8 of the unambiguous alphabet, typed any way', () => {
  const codes = new Set(Array.from({ length: 2000 }, newJoinCode));
  assert.equal(codes.size, 2000);
  for (const code of codes) assert.match(code, new RegExp(`^[${JOIN_CODE_ALPHABET}]{8}$`));
  assert.equal(normalizeJoinCode('ab3d-ef 7h'), 'AB3DEF7H');
  assert.match(newWorkshopId(), /^ws-[a-z0-9]{10}$/);
});
