// Helpers of src/api/fuzz.test.ts: an in-process API built as src/api/app.test.ts builds it (real
// store and lifecycle, stand-in VMM and network), on a loopback subnet so that nothing the proxy
// forwards ever leaves the host's loopback, plus a stand-in guest file server that records what
// reaches it.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import type { FastifyInstance } from 'fastify';
import { buildApi } from '../../src/api/app.ts';
import { Authenticator } from '../../src/api/auth.ts';
import { AuditLog } from '../../src/api/audit.ts';
import { VmManager } from '../../src/vms/manager.ts';
import { VmStore } from '../../src/vms/store.ts';
import { ReadinessTracker } from '../../src/vms/readiness.ts';
import { maxSeatId, parseCidr } from '../../src/network/cidr.ts';
import { findProcessesUnder, killProcess } from '../../src/hypervisors/process.ts';
import { FILES_PORT } from '../../src/proxy/guest.ts';
import { MemoryNetwork, StandInDriver } from './stand-ins.ts';

/**
 * VM addresses come from this loopback subnet: seat N of the seed workshop is 127.77.0.(10+N).
 * The files proxy therefore only ever connects to the host's loopback (never a real network).
 */
export const FUZZ_CIDR = '127.77.0.1/24';
export const WORKER_ID = 'fuzz-worker';

export interface FuzzApi {
  readonly app: FastifyInstance;
  readonly manager: VmManager;
  readonly network: MemoryNetwork;
  readonly dir: string;
  close(): Promise<void>;
}

export interface FuzzApiOptions {
  readonly agentToken: string | undefined;
  readonly secret: string | undefined;
  readonly capacity: number;
}

export async function buildFuzzApi(o: FuzzApiOptions): Promise<FuzzApi> {
  const dir = mkdtempSync(join(tmpdir(), 'ct-fuzz-'));
  const imagesDir = join(dir, 'images');
  mkdirSync(imagesDir);
  for (const f of ['vmlinux', 'initrd.img', 'rootfs.ext4']) writeFileSync(join(imagesDir, f), 'x');
  const cidr = parseCidr(FUZZ_CIDR);
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
    bridgeName: 'ct-fuzz0',
    bridgeCidr: cidr,
    capacity: o.capacity,
    vmDiskMb: 64,
    gracefulStopMs: 100,
  });
  // Guests "answer" at once: a create with "wait": "ready" never waits, and no probe travels.
  const probe = async () => ({ terminal: true, files: true });
  const app = await buildApi({
    log,
    auth: new Authenticator(o.agentToken, o.secret, WORKER_ID),
    audit: new AuditLog(log, join(dir, 'state', 'audit.log')),
    learnerTokenTtlS: 600,
    probe,
    status: {
      manager,
      workerId: WORKER_ID,
      capacity: o.capacity,
      version: '0.0.0-fuzz',
      hypervisor: { name: 'qemu', acceleration: 'tcg' },
      bridge: { name: 'ct-fuzz0', address: cidr.address, cidr: cidr.text },
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
    async close() {
      await app.close();
      for (const { proc } of await findProcessesUnder(dir)) await killProcess(proc);
      store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface StandInFileServer {
  /** Raw request targets (path and query) the server received, in order. */
  readonly received: string[];
  /** Authorization headers it received (the agent must strip them). */
  readonly authorizations: string[];
  close(): Promise<void>;
}

/**
 * A guest file server stand-in on `ip`:FILES_PORT (a loopback address): answers every request
 * 200 with a small JSON body after draining the upload, and records the request targets.
 */
export async function startStandInFileServer(ip: string): Promise<StandInFileServer> {
  const received: string[] = [];
  const authorizations: string[] = [];
  const server: Server = createServer((request, response) => {
    received.push(request.url ?? '');
    if (request.headers.authorization !== undefined) authorizations.push(request.headers.authorization);
    request.resume();
    request.on('end', () => {
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end('{"ok":true}');
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(FILES_PORT, ip, () => resolve());
  });
  return {
    received,
    authorizations,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
