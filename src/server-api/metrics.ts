// The server's Prometheus metrics, in a registry of its own (prefix `clarateach_server_`): joins,
// seat provisioning, proxied requests, error answers, and workers and seats by state at scrape time.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { WorkshopRepository } from '../workshops/ports.ts';

export class ServerMetrics {
  readonly registry = new Registry();
  readonly joins: Counter<'result'>;
  readonly provisions: Counter<'result'>;
  readonly proxied: Counter<'kind'>;
  readonly errors: Counter<'status' | 'code'>;

  constructor(repo: WorkshopRepository) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'clarateach_server_' });
    this.joins = new Counter({
      name: 'clarateach_server_joins_total',
      help: 'Joins by result (new, returning, refused)',
      labelNames: ['result'],
      registers,
    });
    this.provisions = new Counter({
      name: 'clarateach_server_seat_provisions_total',
      help: 'Seat VMs made, by result (ready, failed)',
      labelNames: ['result'],
      registers,
    });
    this.proxied = new Counter({
      name: 'clarateach_server_proxied_total',
      help: 'Requests proxied to workers, by kind (page, files, terminal)',
      labelNames: ['kind'],
      registers,
    });
    this.errors = new Counter({
      name: 'clarateach_server_errors_total',
      help: 'Error answers by status and code',
      labelNames: ['status', 'code'],
      registers,
    });
    new Gauge({
      name: 'clarateach_server_workers',
      help: 'Workers by state',
      labelNames: ['state'],
      registers,
      async collect() {
        const workers = await repo.listWorkers();
        for (const state of ['unknown', 'up', 'down'] as const) this.set({ state }, workers.filter((w) => w.state === state).length);
      },
    });
  }
}
