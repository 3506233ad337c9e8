// The proxy's SocketJoiner port (src/proxy/downloads.ts) over the native sockmap addon
// (native/sockmap-relay, built by `npm run build:native`). Where the addon is not built, or the
// kernel or the agent's privileges refuse it, the agent relays every download itself and says why.
import { createRequire } from 'node:module';

const ADDON = new URL('../../native/sockmap-relay/build/Release/sockmap_relay.node', import.meta.url).pathname;

/** Joins a guest's socket to a client's in the kernel; the shape of the proxy's SocketJoiner port. */
export interface KernelRelay {
  /** From now on the guest socket's incoming bytes leave through the client socket, up to `limit`. Returns a handle. */
  join(guestFd: number, clientFd: number, limit: number): number;
  /** The guest may now have sent up to `limit` bytes; past it, its packets are dropped. */
  allow(handle: number, limit: number): void;
  /** Both sockets out of the relay. */
  leave(handle: number): void;
  /** Bytes redirected since the join; negative (-1 - bytes) once the guest sent past its limit. */
  relayed(handle: number): number;
  /** Bytes written into a TCP socket since it connected: acknowledged, or in its send queue. */
  queued(fd: number): number;
}

interface SockmapAddon extends KernelRelay {
  open(): void;
}

const FUNCTIONS = ['open', 'join', 'allow', 'leave', 'relayed', 'queued'] as const;

function isAddon(loaded: unknown): loaded is SockmapAddon {
  if (typeof loaded !== 'object' || loaded === null) return false;
  const record = loaded as Record<string, unknown>;
  return FUNCTIONS.every((name) => typeof record[name] === 'function');
}

export type KernelRelayOpening = { readonly joiner: KernelRelay } | { readonly joiner: undefined; readonly reason: string };

/** The kernel relay, or why there is none. Once per process: the addon keeps one set of maps. */
export function openKernelRelay(): KernelRelayOpening {
  if (process.platform !== 'linux') return { joiner: undefined, reason: 'only on Linux' };
  let loaded: unknown;
  try {
    loaded = createRequire(import.meta.url)(ADDON);
  } catch (error) {
    return { joiner: undefined, reason: `the native addon is not built (npm run build:native): ${(error as Error).message}` };
  }
  if (!isAddon(loaded)) return { joiner: undefined, reason: `${ADDON} is not the sockmap addon` };
  try {
    loaded.open();
  } catch (error) {
    return {
      joiner: undefined,
      reason: `the kernel refused the sockmap (root, or CAP_BPF and CAP_NET_ADMIN, needed): ${(error as Error).message}`,
    };
  }
  const addon = loaded;
  return {
    joiner: {
      join: (guestFd, clientFd, limit) => addon.join(guestFd, clientFd, limit),
      allow: (handle, limit) => addon.allow(handle, limit),
      leave: (handle) => addon.leave(handle),
      relayed: (handle) => addon.relayed(handle),
      queued: (fd) => addon.queued(fd),
    },
  };
}
