// Composition root of the agent: the one place adapters are chosen and wired to the lifecycle and
// the API. `startAgent` wires the host's real adapters; tests call `composeAgent` with stand-ins.
import { join } from 'node:path';
import { totalmem } from 'node:os';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { Registry } from 'prom-client';
import type { AgentConfig } from '../config/config.ts';
import { createLogger } from '../shared/logger.ts';
import { leaveHeapRoomForRelaying } from '../shared/heap.ts';
import { VmStore } from '../store/vm-store.ts';
import { VmManager } from '../vms/manager.ts';
import { endpoint } from '../vms/plans.ts';
import { ReadinessTracker } from '../vms/readiness.ts';
import type { Clock, DiskPort, GuestProbe, HypervisorDriver, ImageCatalog, NetworkPort, ProcessPort, ReclaimCounts } from '../vms/ports.ts';
import { TemplateCatalog } from '../templates/catalog.ts';
import { SnapshotStore } from '../snapshots/store.ts';
import { DEFAULT_TEMPLATE } from '../vms/model.ts';
import { buildApi } from '../api/app.ts';
import { Authenticator } from '../api/auth.ts';
import { AuditLog } from '../api/audit.ts';
import { maxSeatId } from '../network/cidr.ts';
import { createHostNetwork } from '../network/host-network.ts';
import { applyFirewall } from '../network/firewall.ts';
import { SpareLayers } from '../disks/spare-layers.ts';
import { openKernelRelay } from '../host/kernel-relay.ts';
import { hostProcesses } from '../host/process.ts';
import type { SocketJoiner } from '../proxy/downloads.ts';
import { probeGuest } from '../proxy/guest.ts';
import { selectDriver } from '../hypervisors/select.ts';
import { createAgentMetrics } from '../metrics/index.ts';

export const VERSION: string = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string })
  .version;

/** Where `npm run build` puts the learner page (src/learner-page). */
export const LEARNER_PAGE_DIR: string = fileURLToPath(new URL('../../dist/learner-page', import.meta.url));

const WATCH_INTERVAL_MS = 5_000;
const READINESS_INTERVAL_MS = 1_000;
/** Writable layers made ahead, of each kind (empty of VM_DISK_MB, copy of a snapshot's layer). */
const SPARE_LAYERS = 2;

/** The adapters behind the lifecycle's ports and the API's guest probe. */
export interface AgentAdapters {
  readonly driver: HypervisorDriver;
  readonly network: NetworkPort;
  readonly disks: DiskPort;
  readonly images: ImageCatalog;
  readonly processes: ProcessPort;
  readonly probe: GuestProbe;
  readonly clock: Clock;
  /** Joins guest and client sockets for large downloads (absent: the agent relays them itself). */
  readonly joiner?: SocketJoiner;
}

/** Everything else the agent's parts are configured with. */
export interface AgentSettings {
  readonly log: Logger;
  readonly stateDir: string;
  readonly workerId: string;
  readonly version: string;
  readonly bridgeName: string;
  readonly capacity: number;
  readonly memoryBudgetMb?: number;
  readonly vmDiskMb: number;
  readonly extraKernelArgs?: string;
  readonly gracefulStopMs?: number;
  readonly agentToken: string | undefined;
  readonly workspaceTokenSecret: string | undefined;
  readonly learnerTokenTtlS: number;
  readonly maxSeat: number;
  readonly vmDefaults: { readonly vcpus: number; readonly memoryMb: number };
  readonly vmLimits: { readonly vcpus: number; readonly memoryMb: number };
  /** The built learner page (default: LEARNER_PAGE_DIR). */
  readonly pageDir?: string;
  /** Restore new seats from snapshots where the driver can (default off here; the agent's config turns it on). */
  readonly snapshotStart?: boolean;
  /** Name servers a restored guest gets. */
  readonly guestDns?: readonly string[];
}

export interface ComposedAgent {
  readonly app: FastifyInstance;
  readonly manager: VmManager;
  readonly readiness: ReadinessTracker;
  /** The snapshots, when snapshot start is on and the driver can. */
  readonly snapshots: SnapshotStore | undefined;
  /** What the start-up sweep removed, by kind. */
  readonly reclaimed: ReclaimCounts;
  /** The agent's own metrics registry (what `/metrics` shows). */
  readonly metrics: Registry;
  /** Closes the API and the store (VMs keep running). */
  close(): Promise<void>;
}

/** The store, the lifecycle (reconciled with the host) and the API, wired to the given adapters. */
export async function composeAgent(s: AgentSettings, a: AgentAdapters): Promise<ComposedAgent> {
  const startedAt = Date.now();
  const store = new VmStore(join(s.stateDir, 'agent.db'));
  // The agent's own registry, not prom-client's global one: two agents in one process never mix.
  const registry = new Registry();
  const metrics = createAgentMetrics(registry, () => store.list());
  const snapshots =
    s.snapshotStart && a.driver.snapshots
      ? new SnapshotStore({
          dir: join(s.stateDir, 'snapshots'),
          driver: a.driver.snapshots,
          disks: a.disks,
          images: a.images,
          processes: a.processes,
          log: s.log,
          layerSizeMb: s.vmDiskMb,
        })
      : undefined;
  await snapshots?.open();
  const manager = new VmManager({
    observer: metrics.lifecycle,
    ports: {
      driver: a.driver,
      network: a.network,
      disks: a.disks,
      images: a.images,
      store,
      processes: a.processes,
      clock: a.clock,
      ...(snapshots ? { snapshots } : {}),
    },
    ...(s.guestDns ? { guestDns: s.guestDns } : {}),
    log: s.log,
    stateDir: s.stateDir,
    capacity: s.capacity,
    vmDiskMb: s.vmDiskMb,
    ...(s.memoryBudgetMb === undefined ? {} : { memoryBudgetMb: s.memoryBudgetMb }),
    ...(s.extraKernelArgs === undefined ? {} : { extraKernelArgs: s.extraKernelArgs }),
    ...(s.gracefulStopMs === undefined ? {} : { gracefulStopMs: s.gracefulStopMs }),
  });
  const reclaimed = await manager.reconcile();
  s.log.info({ vms: manager.count() }, 'state reconciled');
  await manager.pruneBuilds();
  if (snapshots) {
    // The default template's seats of the default size get their snapshot now, not on first use.
    const build = await a.images.current(DEFAULT_TEMPLATE).catch(() => undefined);
    if (build) snapshots.request({ template: build.template, buildId: build.buildId, ...s.vmDefaults }, build);
  }

  const readiness = new ReadinessTracker(manager, a.probe);
  const app = await buildApi({
    log: s.log,
    auth: new Authenticator(s.agentToken, s.workspaceTokenSecret, s.workerId),
    audit: new AuditLog(s.log, join(s.stateDir, 'audit.log')),
    learnerTokenTtlS: s.learnerTokenTtlS,
    probe: a.probe,
    pageDir: s.pageDir ?? LEARNER_PAGE_DIR,
    templates: a.images,
    ...(snapshots ? { snapshots } : {}),
    observability: { metrics: registry, traffic: metrics.traffic, errorSent: metrics.errorSent },
    ...(a.joiner ? { joiner: a.joiner } : {}),
    status: {
      manager,
      workerId: s.workerId,
      capacity: s.capacity,
      version: s.version,
      hypervisor: a.driver.info,
      bridge: { name: s.bridgeName, address: a.network.subnet.gateway, cidr: a.network.subnet.text },
      startedAt,
      reclaimed,
    },
    vms: { manager, readiness, maxSeat: s.maxSeat, defaults: s.vmDefaults, limits: s.vmLimits },
  });
  return {
    app,
    manager,
    readiness,
    snapshots,
    reclaimed,
    metrics: registry,
    async close() {
      readiness.stop();
      await app.close();
      store.close();
    },
  };
}

export interface RunningAgent {
  readonly url: string;
  stop(): Promise<void>;
}

/** The agent on this host: real hypervisor, network, disks and processes; listening on PORT. */
export async function startAgent(config: AgentConfig): Promise<RunningAgent> {
  const log = createLogger(config.logLevel);
  leaveHeapRoomForRelaying();
  const driver = await selectDriver(config, log);
  log.info({ hypervisor: driver.info.name, acceleration: driver.info.acceleration }, 'hypervisor selected');
  const network = createHostNetwork(config.bridgeName, config.bridgeCidr);
  await network.ensureBridge();
  // Two ready layers of each kind: a create renames one into place instead of running mkfs or cp.
  const spares = new SpareLayers({ dir: join(config.stateDir, 'spare-layers'), perKind: SPARE_LAYERS, log });
  spares.prefill(config.vmDiskMb);
  await installFirewall(config, log);
  const relay = config.kernelRelay ? openKernelRelay() : { joiner: undefined, reason: 'KERNEL_RELAY=off' };
  if (relay.joiner) log.info('large downloads are relayed in the kernel (sockmap)');
  else log.info({ reason: relay.reason }, 'large downloads are relayed by the agent');

  const agent = await composeAgent(
    {
      log,
      stateDir: config.stateDir,
      workerId: config.workerId,
      version: VERSION,
      bridgeName: config.bridgeName,
      capacity: config.capacity,
      memoryBudgetMb: Math.floor((totalmem() / 1048576) * config.memoryOvercommit),
      vmDiskMb: config.vmDiskMb,
      extraKernelArgs: config.vmDns ? `clarateach.dns=${config.vmDns}` : '',
      agentToken: config.agentToken,
      workspaceTokenSecret: config.workspaceTokenSecret,
      learnerTokenTtlS: config.workspaceTokenTtlS,
      maxSeat: maxSeatId(config.bridgeCidr),
      vmDefaults: { vcpus: config.vmVcpus, memoryMb: config.vmMemoryMb },
      vmLimits: { vcpus: config.vmMaxVcpus, memoryMb: config.vmMaxMemoryMb },
      snapshotStart: config.snapshotStart,
      guestDns: config.vmDns ? [config.vmDns] : [],
    },
    {
      driver,
      network,
      disks: spares,
      images: new TemplateCatalog(config.imagesDir, (message) => log.warn(message)),
      processes: hostProcesses,
      probe: (ip) => probeGuest(ip),
      clock: { now: Date.now },
      ...(relay.joiner ? { joiner: relay.joiner } : {}),
    },
  );

  const timers = [
    repeat(
      WATCH_INTERVAL_MS,
      () => agent.manager.watch(),
      (e) => log.error({ err: e }, 'watchdog pass failed'),
    ),
    repeat(
      READINESS_INTERVAL_MS,
      () => agent.readiness.sweep(),
      (e) => log.error({ err: e }, 'readiness pass failed'),
    ),
  ];
  const url = await agent.app.listen({ port: config.port, host: config.host });
  log.info({ url, worker_id: config.workerId }, 'agent listening');

  return {
    url,
    async stop() {
      // A watchdog pass may be booting a VM again: let it record what it started before closing.
      await Promise.all(timers.map((stop) => stop()));
      await agent.close();
    },
  };
}

/** Isolation and egress rules, with the guard set holding every VM the store knows. */
async function installFirewall(config: AgentConfig, log: Logger): Promise<void> {
  const store = new VmStore(join(config.stateDir, 'agent.db'));
  let vms;
  try {
    vms = store.list().map(endpoint);
  } finally {
    store.close();
  }
  const firewall = await applyFirewall({
    bridge: config.bridgeName,
    cidr: config.bridgeCidr,
    egress: config.egress,
    dns: config.vmDns,
    vms,
  });
  firewall.warnings.forEach((w) => log.warn(w));
  log.info({ uplink: firewall.uplink ?? null, egress: config.egress.mode }, 'network isolation and egress rules installed');
}

/** Runs `task` every `ms`, never two at once. The returned stop waits for a run in progress. */
function repeat(ms: number, task: () => Promise<void>, onError: (error: unknown) => void): () => Promise<void> {
  let current: Promise<void> | undefined;
  const timer = setInterval(() => {
    if (current) return;
    current = task()
      .catch(onError)
      .finally(() => (current = undefined));
  }, ms);
  timer.unref();
  return async () => {
    clearInterval(timer);
    await current;
  };
}
