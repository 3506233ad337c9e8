// An in-process agent API for tests: the real Fastify app, store (a real SQLite file), lifecycle,
// auth and audit, with the stand-in VMM and in-memory network of stand-ins.ts.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import type { FastifyInstance } from 'fastify';
import { composeAgent } from '../../src/cli/agent.ts';
import type { VmManager } from '../../src/vms/manager.ts';
import { maxSeatId, parseCidr } from '../../src/network/cidr.ts';
import { layerDisks } from '../../src/disks/layer.ts';
import { imagePaths } from '../../src/image/layout.ts';
import { TemplateCatalog } from '../../src/templates/catalog.ts';
import { findProcessesUnder, hostProcesses, killProcess } from '../../src/host/process.ts';
import type { GuestProbe } from '../../src/vms/ports.ts';
import type { SocketJoiner } from '../../src/proxy/downloads.ts';
import { MemoryNetwork, StandInDriver } from './stand-ins.ts';

export interface TestApiOptions {
  readonly agentToken: string | undefined;
  readonly secret?: string;
  readonly capacity: number;
  readonly cidr?: string;
  readonly workerId?: string;
  /** What the guest health probe says for every VM (default: nothing answers). */
  readonly guestAnswers?: boolean;
  /** The guest health probe itself (overrides `guestAnswers`). */
  readonly probe?: GuestProbe;
  /** The lifecycle's clock (default Date.now). */
  readonly now?: () => number;
  /** The learner page's build (default: the repository's dist/learner-page). */
  readonly pageDir?: string;
  /** The agent's logger (default: silent). */
  readonly log?: Logger;
  /** The kernel relay for large downloads (default: none, the agent relays them). */
  readonly joiner?: SocketJoiner;
}

export interface TestApi {
  readonly app: FastifyInstance;
  readonly manager: VmManager;
  readonly network: MemoryNetwork;
  /** The stand-in VMM driver (`failNext` makes the next boot fail). */
  readonly driver: StandInDriver;
  readonly dir: string;
  readonly auditPath: string;
  close(): Promise<void>;
}

export async function buildTestApi(o: TestApiOptions): Promise<TestApi> {
  const dir = mkdtempSync(join(tmpdir(), 'ct-api-'));
  const imagesDir = join(dir, 'images');
  mkdirSync(imagesDir);
  const images = imagePaths(imagesDir);
  for (const f of [images.kernel, images.initrd, images.rootfs]) writeFileSync(f, 'x');
  const cidrText = o.cidr ?? '192.168.100.1/24';
  const network = new MemoryNetwork(cidrText);
  const answers = o.guestAnswers ?? false;
  const stateDir = join(dir, 'state');
  const driver = new StandInDriver();
  const agent = await composeAgent(
    {
      log: o.log ?? pino({ level: 'silent' }),
      stateDir,
      workerId: o.workerId ?? 'test-worker',
      version: '0.0.0-test',
      bridgeName: 'ct-test0',
      capacity: o.capacity,
      vmDiskMb: 256,
      gracefulStopMs: 100,
      agentToken: o.agentToken,
      workspaceTokenSecret: o.secret,
      learnerTokenTtlS: 600,
      maxSeat: maxSeatId(parseCidr(cidrText)),
      vmDefaults: { vcpus: 1, memoryMb: 512 },
      vmLimits: { vcpus: 4, memoryMb: 4096 },
      ...(o.pageDir === undefined ? {} : { pageDir: o.pageDir }),
    },
    {
      driver,
      network,
      disks: layerDisks,
      images: new TemplateCatalog(imagesDir),
      processes: hostProcesses,
      probe: o.probe ?? (async () => ({ terminal: answers, files: answers })),
      clock: { now: o.now ?? Date.now },
      ...(o.joiner ? { joiner: o.joiner } : {}),
    },
  );
  return {
    app: agent.app,
    manager: agent.manager,
    network,
    driver,
    dir,
    auditPath: join(stateDir, 'audit.log'),
    async close() {
      await agent.close();
      for (const { proc } of await findProcessesUnder(dir)) await killProcess(proc);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
