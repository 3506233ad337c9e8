// What the proxy reports of the traffic it carries, for whoever counts (metrics): connections and
// bytes by direction. The proxy declares this port; the composition root hands in an implementation.

export type ProxiedService = 'terminal' | 'files';
export type TrafficDirection = 'to_guest' | 'from_guest';

export interface ProxyTraffic {
  /** A terminal WebSocket connected, or a files request arrived. */
  connected(service: ProxiedService): void;
  transferred(service: ProxiedService, direction: TrafficDirection, bytes: number): void;
}

export const untracked: ProxyTraffic = { connected: () => undefined, transferred: () => undefined };

export { countingStream } from '../shared/streams.ts';
