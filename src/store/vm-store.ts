// Durable VM state in SQLite. Every statement is synchronous, so a read-check-insert inside one
// transaction cannot interleave with another request: reservation is race-free by construction.
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { StartMode, StartRecord, VmRecord, VmStatus } from '../vms/model.ts';
import type { Addressing, Reservation, ReserveLimits, ReserveResult, VmRepository } from '../vms/ports.ts';

interface Row {
  workshop_id: string;
  seat_id: number;
  ip: string;
  ip_int: number;
  mac: string;
  tap_name: string;
  vcpus: number;
  memory_mb: number;
  hypervisor: string;
  template: string;
  build_id: string;
  status: VmStatus;
  pid: number | null;
  pid_start_time: number | null;
  created_at: number;
  running_at: number | null;
  ready_at: number | null;
  restarts: number;
  last_error: string | null;
  start_mode: StartMode;
  start_reason: string | null;
  steps_ms: string;
  undo_on_start: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS vms (
  workshop_id    TEXT    NOT NULL,
  seat_id        INTEGER NOT NULL,
  ip             TEXT    NOT NULL UNIQUE,
  ip_int         INTEGER NOT NULL UNIQUE,
  mac            TEXT    NOT NULL UNIQUE,
  tap_name       TEXT    NOT NULL UNIQUE,
  vcpus          INTEGER NOT NULL,
  memory_mb      INTEGER NOT NULL,
  hypervisor     TEXT    NOT NULL,
  status         TEXT    NOT NULL,
  pid            INTEGER,
  pid_start_time INTEGER,
  created_at     INTEGER NOT NULL,
  running_at     INTEGER,
  ready_at       INTEGER,
  restarts       INTEGER NOT NULL DEFAULT 0,
  last_error     TEXT,
  template       TEXT    NOT NULL DEFAULT 'default',
  build_id       TEXT    NOT NULL DEFAULT '',
  start_mode     TEXT    NOT NULL DEFAULT 'cold',
  start_reason   TEXT,
  steps_ms       TEXT    NOT NULL DEFAULT '{}',
  undo_on_start  INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (workshop_id, seat_id)
);
`;

/** Columns added after the first release: an older agent.db gets them on open (its VMs: the default template, build ''). */
const ADDED_COLUMNS: readonly (readonly [string, string])[] = [
  ['template', "TEXT NOT NULL DEFAULT 'default'"],
  ['build_id', "TEXT NOT NULL DEFAULT ''"],
  ['start_mode', "TEXT NOT NULL DEFAULT 'cold'"],
  ['start_reason', 'TEXT'],
  ['steps_ms', "TEXT NOT NULL DEFAULT '{}'"],
  ['undo_on_start', 'INTEGER NOT NULL DEFAULT 0'],
];

function parseSteps(text: string): Record<string, number> {
  try {
    const value: unknown = JSON.parse(text);
    if (typeof value !== 'object' || value === null) return {};
    return Object.fromEntries(Object.entries(value).filter((e): e is [string, number] => typeof e[1] === 'number'));
  } catch {
    return {};
  }
}

function toRecord(row: Row): VmRecord {
  return {
    workshopId: row.workshop_id,
    seatId: row.seat_id,
    ip: row.ip,
    mac: row.mac,
    tapName: row.tap_name,
    vcpus: row.vcpus,
    memoryMb: row.memory_mb,
    hypervisor: row.hypervisor,
    template: row.template,
    buildId: row.build_id,
    status: row.status,
    pid: row.pid,
    pidStartTime: row.pid_start_time,
    createdAt: row.created_at,
    runningAt: row.running_at,
    readyAt: row.ready_at,
    restarts: row.restarts,
    lastError: row.last_error,
    undoOnStart: row.undo_on_start === 1,
    start: { mode: row.start_mode === 'snapshot' ? 'snapshot' : 'cold', reason: row.start_reason, stepsMs: parseSteps(row.steps_ms) },
  };
}

export class VmStore implements VmRepository {
  private readonly db: Database.Database;

  constructor(path: string) {
    mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path);
    // WAL + synchronous=FULL: a committed reservation or status change survives a crash or power cut.
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(SCHEMA);
    this.addMissingColumns();
  }

  private addMissingColumns(): void {
    const have = new Set((this.db.prepare('PRAGMA table_info(vms)').all() as { name: string }[]).map((c) => c.name));
    for (const [name, definition] of ADDED_COLUMNS) {
      if (!have.has(name)) this.db.exec(`ALTER TABLE vms ADD COLUMN ${name} ${definition}`);
    }
  }

  close(): void {
    this.db.close();
  }

  /** Atomically checks seat and capacity, allocates an address and records the VM as `creating`. */
  reserve(request: Reservation, limits: ReserveLimits, addressing: Addressing, now: number): ReserveResult {
    return this.db.transaction((): ReserveResult => {
      if (this.get(request.workshopId, request.seatId)) return { ok: false, reason: 'exists' };
      const totals = this.db.prepare('SELECT COUNT(*) AS n, COALESCE(SUM(memory_mb), 0) AS mb FROM vms').get() as { n: number; mb: number };
      if (totals.n >= limits.capacity) return { ok: false, reason: 'at_capacity' };
      if (totals.mb + request.memoryMb > limits.memoryBudgetMb) return { ok: false, reason: 'memory', committedMb: totals.mb };
      const used = new Set((this.db.prepare('SELECT ip_int FROM vms').all() as { ip_int: number }[]).map((r) => r.ip_int));
      const ip = addressing.allocate(request.seatId, used);
      if (ip === undefined) return { ok: false, reason: 'no_address' };
      this.db
        .prepare(
          `INSERT INTO vms (workshop_id, seat_id, ip, ip_int, mac, tap_name, vcpus, memory_mb, hypervisor, template, build_id, status, created_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'creating', ?)`,
        )
        .run(
          request.workshopId,
          request.seatId,
          addressing.ipText(ip),
          ip,
          addressing.mac(ip),
          addressing.tapName(ip),
          request.vcpus,
          request.memoryMb,
          request.hypervisor,
          request.template,
          request.buildId,
          now,
        );
      const vm = this.get(request.workshopId, request.seatId);
      if (!vm) throw new Error('reservation vanished inside its own transaction');
      return { ok: true, vm };
    })();
  }

  get(workshopId: string, seatId: number): VmRecord | undefined {
    const row = this.db.prepare('SELECT * FROM vms WHERE workshop_id = ? AND seat_id = ?').get(workshopId, seatId) as Row | undefined;
    return row && toRecord(row);
  }

  list(workshopId?: string): VmRecord[] {
    const rows = (
      workshopId === undefined
        ? this.db.prepare('SELECT * FROM vms ORDER BY workshop_id, seat_id').all()
        : this.db.prepare('SELECT * FROM vms WHERE workshop_id = ? ORDER BY seat_id').all(workshopId)
    ) as Row[];
    return rows.map(toRecord);
  }

  count(): number {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM vms').get() as { n: number }).n;
  }

  markRunning(workshopId: string, seatId: number, pid: number, pidStartTime: number, now: number): void {
    this.db
      .prepare(
        `UPDATE vms SET status = 'running', pid = ?, pid_start_time = ?, running_at = COALESCE(running_at, ?), last_error = NULL
         WHERE workshop_id = ? AND seat_id = ?`,
      )
      .run(pid, pidStartTime, now, workshopId, seatId);
  }

  /** A VMM that died was started again: new process, one more restart. */
  markRestarted(workshopId: string, seatId: number, pid: number, pidStartTime: number): void {
    this.db
      .prepare(
        `UPDATE vms SET status = 'running', pid = ?, pid_start_time = ?, restarts = restarts + 1, ready_at = NULL, last_error = NULL
         WHERE workshop_id = ? AND seat_id = ?`,
      )
      .run(pid, pidStartTime, workshopId, seatId);
  }

  recordStart(workshopId: string, seatId: number, start: StartRecord): void {
    this.db
      .prepare('UPDATE vms SET start_mode = ?, start_reason = ?, steps_ms = ? WHERE workshop_id = ? AND seat_id = ?')
      .run(start.mode, start.reason, JSON.stringify(start.stepsMs), workshopId, seatId);
  }

  markReady(workshopId: string, seatId: number, now: number): void {
    this.db.prepare('UPDATE vms SET ready_at = ? WHERE workshop_id = ? AND seat_id = ? AND ready_at IS NULL').run(now, workshopId, seatId);
  }

  markFailed(workshopId: string, seatId: number, reason: string, undoOnStart = false): void {
    this.db
      .prepare(
        `UPDATE vms SET status = 'failed', pid = NULL, pid_start_time = NULL, ready_at = NULL, last_error = ?, undo_on_start = ? WHERE workshop_id = ? AND seat_id = ?`,
      )
      .run(reason, undoOnStart ? 1 : 0, workshopId, seatId);
  }

  markStopRequested(workshopId: string, seatId: number): void {
    this.db
      .prepare(`UPDATE vms SET status = 'stopped', ready_at = NULL, last_error = NULL WHERE workshop_id = ? AND seat_id = ?`)
      .run(workshopId, seatId);
  }

  cancelStop(workshopId: string, seatId: number): void {
    this.db.prepare(`UPDATE vms SET status = 'running' WHERE workshop_id = ? AND seat_id = ?`).run(workshopId, seatId);
  }

  markStopped(workshopId: string, seatId: number, error: string | null): void {
    this.db
      .prepare(
        `UPDATE vms SET status = 'stopped', pid = NULL, pid_start_time = NULL, ready_at = NULL, last_error = ? WHERE workshop_id = ? AND seat_id = ?`,
      )
      .run(error, workshopId, seatId);
  }

  markStarting(workshopId: string, seatId: number): void {
    this.db
      .prepare(
        `UPDATE vms SET status = 'running', pid = NULL, pid_start_time = NULL, ready_at = NULL, last_error = NULL WHERE workshop_id = ? AND seat_id = ?`,
      )
      .run(workshopId, seatId);
  }

  markDeleting(workshopId: string, seatId: number): void {
    this.db.prepare(`UPDATE vms SET status = 'deleting' WHERE workshop_id = ? AND seat_id = ?`).run(workshopId, seatId);
  }

  remove(workshopId: string, seatId: number): void {
    this.db.prepare('DELETE FROM vms WHERE workshop_id = ? AND seat_id = ?').run(workshopId, seatId);
  }
}
