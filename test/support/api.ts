// An in-process agent API for tests: the real Fastify app, store (a real SQLite file), lifecycle,
// auth and audit, with the stand-in VMM and in-memory network of stand-ins.ts.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import type { FastifyInstance } from 'fastify';
import { buildApi } from '../../src/api/app.ts';
import { Authenticator } from '../../src/api/auth.ts';
import { AuditLog } from '../../src/api/audit.ts';
import { VmManager } from '../../src/vms/manager.ts';
import { VmStore } from '../../src/store/vm-store.ts';
import { ReadinessTracker } from '../../src/vms/readiness.ts';
import { maxSeatId, parseCidr } from '../../src/network/cidr.ts';
import { findProcessesUnder, killProcess } from '../../src/host/process.ts';
import { MemoryNetwork, StandInDriver } from './stand-ins.ts';

export interface TestApiOptions {
  readonly agentToken: string | undefined;
  readonly secret?: string;
  readonly capacity: number;
  readonly cidr?: string;
  readonly workerId?: string;
  /** What the guest health probe says for every VM (default: nothing answers). */
  readonly guestAnswers?: boolean;
  /** The lifecycle's clock (default Date.now). */
  readonly now?: () => number;
}

export interface TestApi {
  readonly app: FastifyInstance;
  readonly manager: VmManager;
  readonly network: MemoryNetwork;
  readonly dir: string;
  readonly auditPath: string;
  close(): Promise<void>;
}

export async function buildTestApi(o: TestApiOptions): Promise<TestApi> {
  const dir = mkdtempSync(join(tmpdir(), 'ct-api-'));
  const imagesDir = join(dir, 'images');
  mkdirSync(imagesDir);
  for (const f of ['vmlinux', 'initrd.img', 'rootfs.ext4']) writeFileSync(join(imagesDir, f), 'x');
  const cidr = parseCidr(o.cidr ?? '192.168.100.1/24');
  const workerId = o.workerId ?? 'test-worker';
  const store = new VmStore(join(dir, 'state', 'agent.db'));
  const log = pino({ level: 'silent' });
  const network = new MemoryNetwork();
  const manager = new VmManager({
    store,
    driver: new StandInDriver(),
    network,
    log,
    stateDir: join(dir, 'state'),
    imagesDir,
    bridgeName: 'ct-test0',
    bridgeCidr: cidr,
    capacity: o.capacity,
    vmDiskMb: 256,
    gracefulStopMs: 100,
    ...(o.now ? { now: o.now } : {}),
  });
  const answers = o.guestAnswers ?? false;
  const probe = async () => ({ terminal: answers, files: answers });
  const auditPath = join(dir, 'state', 'audit.log');
  const app = await buildApi({
    log,
    auth: new Authenticator(o.agentToken, o.secret, workerId),
    audit: new AuditLog(log, auditPath),
    learnerTokenTtlS: 600,
    probe,
    status: {
      manager,
      workerId,
      capacity: o.capacity,
      version: '0.0.0-test',
      hypervisor: { name: 'qemu', acceleration: 'tcg' },
      bridge: { name: 'ct-test0', address: cidr.address, cidr: cidr.text },
      startedAt: Date.now(),
    },
    vms: {
      manager,
      readiness: new ReadinessTracker(manager, probe),
      maxSeat: maxSeatId(cidr),
      defaults: { vcpus: 1, memoryMb: 512 },
      limits: { vcpus: 4, memoryMb: 4096 },
    },
  });
  return {
    app,
    manager,
    network,
    dir,
    auditPath,
    async close() {
      await app.close();
      for (const { proc } of await findProcessesUnder(dir)) await killProcess(proc);
      store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
