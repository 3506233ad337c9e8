// The repository on a real embedded Postgres (PGlite in a temp dir): migrations run once, seats
// are never given twice under concurrent joins, workers are never overfilled, a refused create
// keeps nothing, a workshop ends once, workers go down after failed polls.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openPglite, type Database } from './database.ts';
import { MIGRATIONS, migrate } from './migrations.ts';
import { SqlWorkshopRepository } from './repository.ts';
import { newJoinCode, newWorkshopId, tokenDigest } from '../workshops/codes.ts';
import type { NewWorkshop } from '../workshops/model.ts';

describe('SqlWorkshopRepository on PGlite', { timeout: 120_000 }, () => {
  let dir: string;
  let db: Database;
  let repo: SqlWorkshopRepository;
  let instructorId: string;

  const workshop = (o: Partial<NewWorkshop> = {}): NewWorkshop => ({
    instructorId,
    name: 'lab',
    seats: 2,
    maxSeats: 10,
    template: 'default',
    vcpus: 1,
    memoryMb: 256,
    startsAt: Date.now(),
    endsAt: Date.now() + 3_600_000,
    idleTimeoutS: 600,
    ...o,
  });
  const upWorker = async (id: string, capacity: number, memoryMb: number | null = null): Promise<void> => {
    await repo.addWorker({ id, url: `http://127.0.0.1:${9000 + Number(id.replace(/\D/g, '') || 0)}/${id}`, token: null, memoryMb });
    await repo.observeWorker(id, { state: 'up', capacity, vmCount: 0, agentWorkerId: id }, Date.now(), 2);
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'ct-repo-'));
    db = await openPglite(join(dir, 'db'));
    assert.equal(await migrate(db), MIGRATIONS.length);
    assert.equal(await migrate(db), 0, 'a second run applies nothing');
    repo = new SqlWorkshopRepository(db);
    instructorId = (await repo.addInstructor('in-1', 'teacher@example.org', 'hash')).id;
  });
  after(async () => {
    await db.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('concurrent joins: every learner gets another seat, made seats first, no worker over capacity', async () => {
    await upWorker('w1', 6);
    await upWorker('w2', 6);
    const { workshop: w, placed } = await repo.createWorkshop(
      newWorkshopId(),
      newJoinCode(),
      workshop({ seats: 4, maxSeats: 12 }),
      'spread',
    );
    assert.deepEqual(
      placed.map((p) => p.worker.id),
      ['w1', 'w2', 'w1', 'w2'],
      'spread alternates',
    );
    const joins = await Promise.allSettled(
      Array.from({ length: 14 }, (_, i) =>
        repo.join({ workshopId: w.id, learnerId: `lr-${i}`, name: `learner ${i}`, tokenDigest: tokenDigest(`t${i}`), policy: 'spread' }),
      ),
    );
    const ok = joins.flatMap((j) => (j.status === 'fulfilled' ? [j.value] : []));
    const refused = joins.flatMap((j) => (j.status === 'rejected' ? [(j.reason as { code: string }).code] : []));
    assert.equal(ok.length, 12, 'max_seats seats');
    assert.deepEqual(refused, ['workshop_full', 'workshop_full']);
    const seats = ok.map((o) => o.seat.seatId).sort((a, b) => a - b);
    assert.deepEqual(
      seats,
      Array.from({ length: 12 }, (_, i) => i + 1),
      'distinct seats 1..12',
    );
    assert.equal(ok.filter((o) => o.placed === null).length, 4, 'the 4 made seats were handed out, 8 made');
    const all = await repo.listSeats(w.id);
    for (const id of ['w1', 'w2']) assert.ok(all.filter((s) => s.workerId === id).length <= 6, `${id} within capacity`);
    assert.equal(new Set(all.map((s) => s.learnerId)).size, 12);
    assert.equal((await repo.learnerByDigest(tokenDigest('t3')))?.id, 'lr-3');
  });

  test('a workshop the workers cannot hold is refused and leaves nothing behind', async () => {
    const before = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM workshops');
    await assert.rejects(repo.createWorkshop(newWorkshopId(), newJoinCode(), workshop({ seats: 5 }), 'pack'), { code: 'no_capacity' });
    const afterRows = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM workshops');
    assert.deepEqual(afterRows, before);
  });

  test('pack fills the fullest worker with room; memory limits count', async () => {
    await upWorker('w3', 10, 1024);
    await upWorker('w4', 10);
    // w1, w2 are full from the first test: pack puts seats on w3 until its memory is used, then w4.
    const { placed } = await repo.createWorkshop(newWorkshopId(), newJoinCode(), workshop({ seats: 5, memoryMb: 256 }), 'pack');
    assert.deepEqual(
      placed.map((p) => p.worker.id),
      ['w3', 'w3', 'w3', 'w3', 'w4'],
    );
  });

  test('ending happens once, removes every seat, and a seat made meanwhile stays removed', async () => {
    const { workshop: w } = await repo.createWorkshop(newWorkshopId(), newJoinCode(), workshop({ seats: 2 }), 'spread');
    const [first, second] = await Promise.all([repo.endWorkshop(w.id, Date.now()), repo.endWorkshop(w.id, Date.now())]);
    assert.equal((first?.length ?? 0) + (second?.length ?? 0), 2, 'only one of two concurrent ends got the seats');
    assert.equal(await repo.setSeatState(w.id, 1, 'ready', null), false);
    assert.ok((await repo.listSeats(w.id)).every((s) => s.state === 'removed'));
    assert.equal((await repo.getWorkshop(w.id))?.state, 'ended');
    await assert.rejects(repo.join({ workshopId: w.id, learnerId: 'late', name: 'late', tokenDigest: 'x', policy: 'spread' }), {
      code: 'workshop_ended',
    });
  });

  test('a worker is down after the failed polls in a row, up again when it answers; removal refused while in use', async () => {
    assert.equal((await repo.observeWorker('w4', { state: 'down', error: 'ECONNREFUSED' }, Date.now(), 2)).state, 'up');
    const down = await repo.observeWorker('w4', { state: 'down', error: 'ECONNREFUSED' }, Date.now(), 2);
    assert.equal(down.state, 'down');
    assert.equal(down.lastError, 'ECONNREFUSED');
    assert.equal((await repo.observeWorker('w4', { state: 'up', capacity: 10 }, Date.now(), 2)).state, 'up');
    await assert.rejects(repo.removeWorker('w1'), { code: 'worker_in_use' });
    await assert.rejects(repo.removeWorker('nope'), { code: 'worker_not_found' });
    await repo.addWorker({ id: 'spare', url: 'http://127.0.0.1:1/spare', token: null, memoryMb: null });
    await repo.removeWorker('spare');
    await assert.rejects(repo.addWorker({ id: 'w1', url: 'http://other', token: null, memoryMb: null }), { code: 'worker_exists' });
  });

  test('stale seats: a start cut short is stopped again, other seats stuck and failed seats nobody has are made afresh, each by one caller', async () => {
    await upWorker('w9', 5);
    const { workshop: w } = await repo.createWorkshop(newWorkshopId(), newJoinCode(), workshop({ seats: 4 }), 'pack');
    const ann = await repo.join({ workshopId: w.id, learnerId: 'lr-ann', name: 'Ann', tokenDigest: tokenDigest('ann'), policy: 'pack' });
    assert.equal(ann.seat.seatId, 1);
    // Seat 1: Ann's, failed (her disk may hold her work): the instructor decides. Seat 2: stopped,
    // then starting again. Seat 3: still provisioning. Seat 4: nobody's, failed.
    await repo.setSeatState(w.id, 1, 'failed', 'it could not start again');
    await repo.setSeatState(w.id, 2, 'stopped', null);
    assert.equal(await repo.claimSeatState(w.id, 2, 'stopped', 'provisioning', 'starting again'), true);
    await repo.setSeatState(w.id, 4, 'failed', 'template "default" is being built');
    assert.deepEqual(await repo.recoverStaleSeats(Date.now() - 60_000), { stopped: 0, remade: [] }, 'not old yet');

    // An hour on, two server processes sweep at once.
    const later = new SqlWorkshopRepository(db, () => Date.now() + 3_600_000);
    const [a, b] = await Promise.all([later.recoverStaleSeats(Date.now() + 1), later.recoverStaleSeats(Date.now() + 1)]);
    const remade = [...(a?.remade ?? []), ...(b?.remade ?? [])].map((p) => `${p.workshopId}/${p.seatId}`);
    assert.deepEqual(remade.filter((seat) => seat.startsWith(`${w.id}/`)).sort(), [`${w.id}/3`, `${w.id}/4`]);
    assert.equal(new Set(remade).size, remade.length, 'each seat (of this and the earlier workshops) taken by one caller only');
    assert.equal((a?.stopped ?? 0) + (b?.stopped ?? 0), 1);
    assert.deepEqual(
      (await repo.listSeats(w.id)).map((s) => s.state),
      ['failed', 'stopped', 'provisioning', 'provisioning'],
    );
    // A VM that was made after all still makes the seat ready.
    assert.equal(await repo.setSeatState(w.id, 3, 'ready', null), true);
    assert.equal((await repo.getSeat(w.id, 3))?.state, 'ready');
  });

  test('a join takes a free seat on a worker that is up before one on a worker that is down', async () => {
    await upWorker('w20', 5);
    await upWorker('w21', 5);
    const { workshop: w, placed } = await repo.createWorkshop(newWorkshopId(), newJoinCode(), workshop({ seats: 2 }), 'spread');
    const [first, second] = placed.map((p) => p.worker.id);
    assert.notEqual(first, second, 'the two seats are on two workers');
    // Seat 1's worker stops answering: two failed polls and it is down.
    for (let i = 0; i < 2; i++) await repo.observeWorker(first ?? '', { state: 'down', error: 'ECONNREFUSED' }, Date.now(), 2);
    assert.equal((await repo.getWorker(first ?? ''))?.state, 'down');
    const joined = await repo.join({ workshopId: w.id, learnerId: 'lr-up', name: 'Cy', tokenDigest: tokenDigest('cy'), policy: 'spread' });
    assert.equal(joined.seat.seatId, 2);
    assert.equal(joined.seat.workerId, second);
    assert.equal(joined.placed, null, 'a made seat, not a new one');
  });

  test('sessions expire; instructors are unique by email', async () => {
    await repo.createSession('digest', instructorId, 'csrf', Date.now() + 1000);
    assert.equal((await repo.sessionByDigest('digest', Date.now()))?.email, 'teacher@example.org');
    assert.equal(await repo.sessionByDigest('digest', Date.now() + 2000), undefined);
    await assert.rejects(repo.addInstructor('in-2', 'teacher@example.org', 'h'), { code: 'instructor_exists' });
  });
});
