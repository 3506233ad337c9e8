// Composition root of the workshop server: the database (PGlite in DATA_DIR, or PostgreSQL at
// DATABASE_URL) with its migrations, the repository, the agents of the workers, the domain service,
// the HTTP app; and the background rounds (worker polls, workshops past their end time). With no
// instructor yet, a setup code is made and its sign-up URL logged.
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { createLogger } from '../shared/logger.ts';
import { leaveHeapRoomForRelaying } from '../shared/heap.ts';
import type { ServerConfig } from '../server-config/config.ts';
import { openDatabase, type Database } from '../server-db/database.ts';
import { migrate } from '../server-db/migrations.ts';
import { SqlWorkshopRepository } from '../server-db/repository.ts';
import { AgentWorkers } from '../server-workers/agent-workers.ts';
import { WorkshopService } from '../workshops/service.ts';
import { pollWorkers } from '../workshops/worker-monitor.ts';
import type { Clock, WorkerPort } from '../workshops/ports.ts';
import { buildServerApp } from '../server-api/app.ts';
import { ServerAuth } from '../server-api/auth.ts';
import { ServerMetrics } from '../server-api/metrics.ts';
import { issueSetupCode, setupUrl } from '../server-api/routes/setup.ts';
import { VERSION } from './agent.ts';

/** Where `npm run build` puts the server's pages (src/server-pages). */
export const SERVER_PAGES_DIR: string = fileURLToPath(new URL('../../dist/server-pages', import.meta.url));

export interface RunningServer {
  readonly url: string;
  readonly app: FastifyInstance;
  readonly service: WorkshopService;
  readonly db: Database;
  /** One round of the background work now (tests): poll workers and reconcile those that answer, end workshops past their end, fail stuck seats. */
  tick(): Promise<void>;
  stop(): Promise<void>;
}

export interface ServerOverrides {
  readonly log?: Logger;
  readonly clock?: Clock;
  readonly workers?: WorkerPort;
  /** No background rounds (tests drive `tick`). */
  readonly noBackground?: boolean;
  /** The built pages (default: SERVER_PAGES_DIR). */
  readonly pagesDir?: string;
  /**
   * Where notices for the operator go as plain text (the sign-up URL). Default: stderr when the
   * log is the server's own (JSON lines, hard to read), nowhere when `log` is given.
   */
  readonly notices?: (text: string) => void;
  /** How often an open terminal refreshes its seat's activity (tests shorten it). */
  readonly terminalActivityIntervalMs?: number;
}

/** The log line an operator reads to make the first account (the same words a test looks for). */
export function setupLine(url: string): string {
  return `no instructor account yet: create the first one at ${url} (or: clarateach instructor add EMAIL)`;
}

export async function startServer(config: ServerConfig, overrides: ServerOverrides = {}): Promise<RunningServer> {
  const log = overrides.log ?? createLogger(config.logLevel, 'clarateach-server');
  leaveHeapRoomForRelaying();
  const clock = overrides.clock ?? { now: Date.now };
  const db = await openDatabase(config);
  try {
    const applied = await migrate(db);
    if (applied > 0) log.info({ applied, database: db.kind }, 'database migrated');
  } catch (error) {
    await db.close();
    throw error;
  }
  const repo = new SqlWorkshopRepository(db, clock.now);
  const workers = overrides.workers ?? new AgentWorkers({ readyTimeoutS: config.seatReadyTimeoutS });
  const metrics = new ServerMetrics(repo);
  const service = new WorkshopService({
    repo,
    workers,
    clock,
    policy: config.placement,
    log,
    // The agent's own wait, and a minute more for the answer to travel.
    provisioningTimeoutMs: (config.seatReadyTimeoutS + 60) * 1000,
    onProvisioned: (result) => metrics.provisions.inc({ result }),
  });
  const app = await buildServerApp({
    log,
    version: VERSION,
    trustProxy: config.trustProxy,
    pagesDir: overrides.pagesDir ?? SERVER_PAGES_DIR,
    ...(overrides.terminalActivityIntervalMs === undefined ? {} : { terminalActivityIntervalMs: overrides.terminalActivityIntervalMs }),
    context: {
      service,
      repo,
      workers,
      auth: new ServerAuth(repo, clock.now),
      clock,
      metrics,
      secureCookies: config.secureCookies,
      sessionTtlS: config.sessionTtlS,
      joinRateLimit: config.joinRateLimit,
      workerDownAfter: config.workerDownAfter,
    },
  });
  const tick = async (): Promise<void> => {
    const polled = await pollWorkers({ repo, workers, clock, downAfterFailures: config.workerDownAfter });
    for (const worker of polled.filter((w) => w.state === 'up')) {
      await service
        .reconcileWorker(worker)
        .catch((error: unknown) => log.warn({ err: error, worker: worker.id }, 'could not reconcile the worker'));
    }
    await service.moveSeatsOffDownWorkers(config.seatMoveAfterS * 1000);
    await service.endDue();
    await service.stopIdle();
    await service.failStale();
  };
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  // Kept before listening: by the time anyone can open the sign-up URL, its code is in the database.
  const setupCode = await issueSetupCode(repo, clock.now()).catch(async (error: unknown) => {
    await app.close();
    await db.close();
    throw error;
  });
  const url = await app.listen({ host: config.host, port: config.port });
  log.info({ url, database: db.kind, placement: config.placement }, 'workshop server listening');
  if (setupCode !== undefined) {
    const signUp = setupUrl(url, setupCode);
    // warn: the server is of no use until someone acts on it, and LOG_LEVEL=warn must still show it.
    log.warn({ setup_url: signUp }, setupLine(signUp));
    const notices = overrides.notices ?? (overrides.log ? undefined : (text: string) => void process.stderr.write(text));
    const elsewhere = ['0.0.0.0', '::'].includes(config.host) ? " (from another machine, with this server's address in it)" : '';
    notices?.(
      `\nclarateach server: no instructor account yet. Create the first one in a browser${elsewhere} at\n\n  ${signUp}\n\n` +
        `or with: clarateach instructor add EMAIL. The code makes the first account only; after that it opens nothing.\n\n`,
    );
  }
  if (!overrides.noBackground) {
    let busy = false;
    const round = (): void => {
      // A round still running (a worker slow to answer) is left to finish and this tick skipped:
      // rounds never overlap, so slow workers cannot pile them up.
      if (busy) return;
      busy = true;
      running = tick()
        .catch((error: unknown) => log.warn({ err: error }, 'background round failed'))
        .finally(() => {
          busy = false;
        });
    };
    round();
    timer = setInterval(round, config.workerPollS * 1000);
    timer.unref();
  }
  return {
    url,
    app,
    service,
    db,
    tick,
    async stop() {
      if (timer) clearInterval(timer);
      await running;
      await app.close();
      await service.settled();
      await db.close();
    },
  };
}
