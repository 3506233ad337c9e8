// Error answers by code: every `{ error, code }` the agent sends, on HTTP replies and raw sockets.
import { Counter, type Registry } from 'prom-client';
import type { ErrorObserver } from '../http/errors.ts';

export function errorMetrics(registry: Registry): ErrorObserver {
  const errors = new Counter({
    name: 'clarateach_http_errors_total',
    help: 'Error answers sent, by code and HTTP status',
    labelNames: ['code', 'status'],
    registers: [registry],
  });
  return (status, code) => errors.inc({ code, status: String(status) });
}
