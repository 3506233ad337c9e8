// The proxy's metrics: connections (terminal WebSockets, files requests) and bytes each way.
import { Counter, type Registry } from 'prom-client';
import type { ProxyTraffic } from '../proxy/traffic.ts';

export function proxyMetrics(registry: Registry): ProxyTraffic {
  const connections = new Counter({
    name: 'clarateach_proxy_connections_total',
    help: 'Terminal WebSocket connections and files requests proxied to guests',
    labelNames: ['service'],
    registers: [registry],
  });
  const bytes = new Counter({
    name: 'clarateach_proxy_bytes_total',
    help: 'Bytes proxied, by service and direction (to_guest, from_guest)',
    labelNames: ['service', 'direction'],
    registers: [registry],
  });
  return {
    connected: (service) => connections.inc({ service }),
    transferred: (service, direction, count) => bytes.inc({ service, direction }, count),
  };
}
