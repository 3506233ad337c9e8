// What every route group of the server is given: the domain service, the repository, auth, the
// clock, cookie settings and metrics. One object, made once by buildServerApp.
import type { WorkshopService } from '../workshops/service.ts';
import type { Clock, WorkerPort, WorkshopRepository } from '../workshops/ports.ts';
import type { SecureCookies, ServerAuth } from './auth.ts';
import type { ServerMetrics } from './metrics.ts';

export interface ServerContext {
  readonly service: WorkshopService;
  readonly repo: WorkshopRepository;
  readonly workers: WorkerPort;
  readonly auth: ServerAuth;
  readonly clock: Clock;
  readonly metrics: ServerMetrics;
  readonly secureCookies: SecureCookies;
  readonly sessionTtlS: number;
  readonly joinRateLimit: number;
  readonly workerDownAfter: number;
}
