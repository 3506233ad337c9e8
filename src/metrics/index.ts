// The agent's Prometheus metrics (prefix `clarateach_`), all in the registry the caller owns:
// the lifecycle's, the proxy's and the error answers' observers, and the process's own metrics.
import { collectDefaultMetrics, type Registry } from 'prom-client';
import type { ErrorObserver } from '../http/errors.ts';
import type { ProxyTraffic } from '../proxy/traffic.ts';
import type { LifecycleObserver } from '../vms/lifecycle-ports.ts';
import { errorMetrics } from './error-metrics.ts';
import { proxyMetrics } from './proxy-metrics.ts';
import { lifecycleMetrics, vmGauges, type VmSource } from './vm-metrics.ts';

export interface AgentMetrics {
  readonly lifecycle: LifecycleObserver;
  readonly traffic: ProxyTraffic;
  readonly errorSent: ErrorObserver;
}

/** Defines every metric in `registry`; `vms` is read at each scrape. */
export function createAgentMetrics(registry: Registry, vms: VmSource): AgentMetrics {
  collectDefaultMetrics({ register: registry, prefix: 'clarateach_' });
  vmGauges(registry, vms);
  return { lifecycle: lifecycleMetrics(registry), traffic: proxyMetrics(registry), errorSent: errorMetrics(registry) };
}
