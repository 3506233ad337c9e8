// One way to run SQL on either database: the embedded PGlite (a Postgres in a directory, in this
// process) or a real PostgreSQL through `pg`. The same statements and migrations run on both.
import { mkdirSync } from 'node:fs';
import { PGlite } from '@electric-sql/pglite';
import pg from 'pg';

export type SqlValue = string | number | boolean | null;

export interface Sql {
  query<Row>(text: string, params?: readonly SqlValue[]): Promise<Row[]>;
}

export interface Database extends Sql {
  readonly kind: 'pglite' | 'postgres';
  /** `fn` in one transaction (READ COMMITTED); rolled back when it throws. */
  transaction<T>(fn: (tx: Sql) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

/** The embedded database in `dataDir` (made if missing). One process at a time may open it. */
export async function openPglite(dataDir: string): Promise<Database> {
  mkdirSync(dataDir, { recursive: true });
  const db = await PGlite.create(dataDir);
  const run = async <Row>(on: Pick<PGlite, 'query'>, text: string, params: readonly SqlValue[] = []): Promise<Row[]> =>
    (await on.query<Row>(text, [...params])).rows;
  return {
    kind: 'pglite',
    query: (text, params) => run(db, text, params),
    // PGlite runs one transaction at a time: concurrent callers wait their turn.
    transaction: (fn) => db.transaction((tx) => fn({ query: (text, params) => run(tx, text, params) })),
    close: () => db.close(),
  };
}

/** A pool on a real PostgreSQL (`postgres://…` or a unix socket via `?host=/dir`). */
export async function openPostgres(url: string, poolSize = 10): Promise<Database> {
  const pool = new pg.Pool({ connectionString: url, max: poolSize });
  // An idle connection dropped by the server must not crash the process.
  pool.on('error', () => undefined);
  const run = async <Row>(on: pg.Pool | pg.PoolClient, text: string, params: readonly SqlValue[] = []): Promise<Row[]> =>
    (await on.query(text, [...params])).rows as Row[];
  await run(pool, 'SELECT 1');
  return {
    kind: 'postgres',
    query: (text, params) => run(pool, text, params),
    async transaction(fn) {
      const client = await pool.connect();
      try {
        await client.query('BEGIN');
        const result = await fn({ query: (text, params) => run(client, text, params) });
        await client.query('COMMIT');
        return result;
      } catch (error) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw error;
      } finally {
        client.release();
      }
    },
    close: () => pool.end(),
  };
}

/** PostgreSQL when `databaseUrl` is set, else the embedded database in `dataDir`. */
export function openDatabase(o: { readonly databaseUrl: string | undefined; readonly dataDir: string }): Promise<Database> {
  return o.databaseUrl === undefined ? openPglite(o.dataDir) : openPostgres(o.databaseUrl);
}
