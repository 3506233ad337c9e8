// Composition root of the agent: configuration in, a listening API with reconciled VMs out.
import { join } from 'node:path';
import { totalmem } from 'node:os';
import { readFileSync } from 'node:fs';
import type { AgentConfig } from '../config/config.ts';
import { createLogger } from '../shared/logger.ts';
import { VmStore } from '../store/vm-store.ts';
import { endpoint, VmManager } from '../vms/manager.ts';
import { ReadinessTracker } from '../vms/readiness.ts';
import { buildApi } from '../api/app.ts';
import { Authenticator } from '../api/auth.ts';
import { AuditLog } from '../api/audit.ts';
import { maxSeatId } from '../network/cidr.ts';
import { hostNetwork } from '../network/index.ts';
import { applyFirewall } from '../network/firewall.ts';
import { probeGuest } from '../proxy/guest.ts';
import { selectDriver } from '../hypervisors/select.ts';

export const VERSION: string = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string })
  .version;

const WATCH_INTERVAL_MS = 5_000;
const READINESS_INTERVAL_MS = 1_000;

export interface RunningAgent {
  readonly url: string;
  stop(): Promise<void>;
}

export async function startAgent(config: AgentConfig): Promise<RunningAgent> {
  const log = createLogger(config.logLevel);
  const startedAt = Date.now();
  const driver = await selectDriver(config, log);
  log.info({ hypervisor: driver.info.name, acceleration: driver.info.acceleration }, 'hypervisor selected');

  const store = new VmStore(join(config.stateDir, 'agent.db'));
  await hostNetwork.ensureBridge(config.bridgeName, config.bridgeCidr);
  const firewall = await applyFirewall({
    bridge: config.bridgeName,
    cidr: config.bridgeCidr,
    egress: config.egress,
    dns: config.vmDns,
    vms: store.list().map(endpoint),
  });
  firewall.warnings.forEach((w) => log.warn(w));
  log.info({ uplink: firewall.uplink ?? null, egress: config.egress.mode }, 'network isolation and egress rules installed');
  const manager = new VmManager({
    store,
    driver,
    network: hostNetwork,
    extraKernelArgs: config.vmDns ? `clarateach.dns=${config.vmDns}` : '',
    log,
    stateDir: config.stateDir,
    imagesDir: config.imagesDir,
    bridgeName: config.bridgeName,
    bridgeCidr: config.bridgeCidr,
    capacity: config.capacity,
    memoryBudgetMb: Math.floor((totalmem() / 1048576) * config.memoryOvercommit),
    vmDiskMb: config.vmDiskMb,
  });
  await manager.reconcile();
  log.info({ vms: manager.count() }, 'state reconciled');

  const probe = (ip: string) => probeGuest(ip, 1000);
  const readiness = new ReadinessTracker(manager, probe);
  const app = await buildApi({
    log,
    auth: new Authenticator(config.agentToken, config.workspaceTokenSecret, config.workerId),
    audit: new AuditLog(log, join(config.stateDir, 'audit.log')),
    learnerTokenTtlS: config.workspaceTokenTtlS,
    probe,
    status: {
      manager,
      workerId: config.workerId,
      capacity: config.capacity,
      version: VERSION,
      hypervisor: driver.info,
      bridge: { name: config.bridgeName, address: config.bridgeCidr.address, cidr: config.bridgeCidr.text },
      startedAt,
    },
    vms: {
      manager,
      readiness,
      maxSeat: maxSeatId(config.bridgeCidr),
      defaults: { vcpus: config.vmVcpus, memoryMb: config.vmMemoryMb },
      limits: { vcpus: config.vmMaxVcpus, memoryMb: config.vmMaxMemoryMb },
    },
  });

  const timers = [
    repeat(
      WATCH_INTERVAL_MS,
      () => manager.watch(),
      (e) => log.error({ err: e }, 'watchdog pass failed'),
    ),
    repeat(
      READINESS_INTERVAL_MS,
      () => readiness.sweep(),
      (e) => log.error({ err: e }, 'readiness pass failed'),
    ),
  ];
  const url = await app.listen({ port: config.port, host: config.host });
  log.info({ url, worker_id: config.workerId }, 'agent listening');

  return {
    url,
    async stop() {
      // A watchdog pass may be booting a VM again: let it record what it started before closing.
      await Promise.all(timers.map((stop) => stop()));
      await app.close();
      store.close();
    },
  };
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
