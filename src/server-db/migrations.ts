// The server's schema as ordered migrations, the same SQL for PGlite and PostgreSQL. Each runs
// once, recorded in schema_migrations; an advisory lock lets several processes start together.
import type { Database } from './database.ts';

/** Times are epoch milliseconds as double precision: both drivers return them as numbers. */
export const MIGRATIONS: readonly string[] = [
  `CREATE TABLE instructors (
     id text PRIMARY KEY,
     email text NOT NULL UNIQUE,
     password_hash text NOT NULL,
     created_at double precision NOT NULL
   );
   CREATE TABLE sessions (
     token_digest text PRIMARY KEY,
     instructor_id text NOT NULL REFERENCES instructors(id) ON DELETE CASCADE,
     csrf_token text NOT NULL,
     expires_at double precision NOT NULL
   );
   CREATE TABLE workers (
     id text PRIMARY KEY,
     url text NOT NULL UNIQUE,
     token text,
     state text NOT NULL DEFAULT 'unknown' CHECK (state IN ('unknown', 'up', 'down')),
     capacity integer,
     memory_mb integer,
     agent_worker_id text,
     vm_count integer,
     last_seen_at double precision,
     last_error text,
     failures integer NOT NULL DEFAULT 0,
     created_at double precision NOT NULL
   );
   CREATE TABLE workshops (
     id text PRIMARY KEY,
     instructor_id text NOT NULL REFERENCES instructors(id),
     name text NOT NULL,
     seats integer NOT NULL,
     max_seats integer NOT NULL,
     next_seat integer NOT NULL DEFAULT 1,
     template text NOT NULL,
     vcpus integer NOT NULL,
     memory_mb integer NOT NULL,
     starts_at double precision NOT NULL,
     ends_at double precision NOT NULL,
     idle_timeout_s integer NOT NULL,
     join_code text NOT NULL UNIQUE,
     state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'ended')),
     created_at double precision NOT NULL,
     ended_at double precision
   );
   CREATE TABLE seats (
     workshop_id text NOT NULL REFERENCES workshops(id),
     seat_id integer NOT NULL,
     worker_id text REFERENCES workers(id) ON DELETE SET NULL,
     state text NOT NULL CHECK (state IN ('provisioning', 'ready', 'failed', 'removed')),
     memory_mb integer NOT NULL,
     learner_id text,
     last_activity_at double precision,
     connections integer NOT NULL DEFAULT 0,
     error text,
     state_since double precision NOT NULL,
     created_at double precision NOT NULL,
     PRIMARY KEY (workshop_id, seat_id)
   );
   CREATE INDEX seats_on_worker ON seats (worker_id) WHERE state <> 'removed';
   CREATE TABLE learners (
     id text PRIMARY KEY,
     workshop_id text NOT NULL REFERENCES workshops(id),
     seat_id integer NOT NULL,
     name text NOT NULL,
     token_digest text NOT NULL UNIQUE,
     created_at double precision NOT NULL,
     UNIQUE (workshop_id, seat_id)
   );
   CREATE TABLE audit (
     id bigserial PRIMARY KEY,
     at double precision NOT NULL,
     actor text NOT NULL,
     action text NOT NULL,
     target text NOT NULL,
     workshop_id text,
     detail text
   );
   CREATE INDEX audit_by_workshop ON audit (workshop_id, id);`,
  // Seats idle past their workshop's timeout are stopped (VM stopped, disk kept).
  `ALTER TABLE seats DROP CONSTRAINT seats_state_check;
   ALTER TABLE seats ADD CONSTRAINT seats_state_check CHECK (state IN ('provisioning', 'ready', 'stopped', 'failed', 'removed'))`,
  // One-time codes for signing up the first instructor: only their digests; each server process
  // that starts with no instructor adds one, and all go when the first account is made.
  `CREATE TABLE setup_codes (
     code_digest text PRIMARY KEY,
     created_at double precision NOT NULL
   )`,
  // A seat provisioning because a stopped seat is starting again: its disk must survive a server
  // that stops midway (it goes back to stopped, not to a fresh VM). Seats starting again now keep
  // that mark through the upgrade.
  `ALTER TABLE seats ADD COLUMN waking boolean NOT NULL DEFAULT false;
   UPDATE seats SET waking = true WHERE state = 'provisioning' AND error = 'starting again after it was stopped while idle'`,
];

/** An arbitrary constant: the key of the advisory lock migrations hold. */
const MIGRATION_LOCK = 7_301_442;

/** Applies the migrations not applied yet; returns how many ran. */
export async function migrate(db: Database): Promise<number> {
  return db.transaction(async (tx) => {
    await tx.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    await tx.query('CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, applied_at double precision NOT NULL)');
    const rows = await tx.query<{ version: number }>('SELECT coalesce(max(version), 0)::int AS version FROM schema_migrations');
    const current = rows[0]?.version ?? 0;
    let applied = 0;
    for (let version = current + 1; version <= MIGRATIONS.length; version++) {
      for (const statement of splitStatements(MIGRATIONS[version - 1] ?? '')) await tx.query(statement);
      await tx.query('INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)', [version, Date.now()]);
      applied++;
    }
    return applied;
  });
}

/** Our migrations hold no `;` inside literals: splitting on it is enough (pg's extended protocol takes one statement at a time). */
function splitStatements(sql: string): string[] {
  return sql
    .split(';')
    .map((s) => s.trim())
    .filter((s) => s !== '');
}
