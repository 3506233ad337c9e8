// While a learner's terminal is open through the server, the server refreshes the seat's last
// activity (the idle stop asks only that), so a seat with a terminal open is never stopped however
// quiet it is; once the terminal closes the refresh ends with it. The server as the composition
// root starts it (startServer), with the refresh interval shortened; embedded database, one real
// in-process agent (stand-in VMM) whose seat 1 runs the real guest terminal server; a clock the
// test moves forward.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { startServer, type RunningServer } from '../cli/server.ts';
import { loadServerConfig } from '../server-config/config.ts';
import { SqlWorkshopRepository } from '../server-db/repository.ts';
import type { WorkshopService } from '../workshops/service.ts';
import { GUEST_PORTS } from '../guest/contract.ts';
import { silentLogger } from '../guest/shared/log.ts';
import { startTerminalServer } from '../guest/terminal/server.ts';
import { Browser, eventually, startTestWorker, type TestWorker } from '../../test/support/workshop-server.ts';
import { TerminalClient } from '../../test/support/terminal-client.ts';

let dir: string;
let workspace: string;
let server: RunningServer;
let url: string;
let repo: SqlWorkshopRepository;
let service: WorkshopService;
let worker: TestWorker;
const closers: { close(): Promise<void> }[] = [];
let offsetMs = 0;
const clock = { now: (): number => Date.now() + offsetMs };

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'ct-terminal-activity-'));
  workspace = mkdtempSync(join(tmpdir(), 'ct-terminal-activity-ws-'));
  worker = await startTestWorker({ capacity: 4, workerId: 'wa' });
  closers.push(
    await startTerminalServer({
      config: {
        host: `${worker.subnet}.11`,
        port: GUEST_PORTS.terminal,
        workspaceDir: workspace,
        shell: '/bin/bash',
        detachedTtlS: 60,
        scrollbackBytes: 65536,
      },
      logger: silentLogger,
      env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: workspace, LANG: 'C.UTF-8' },
    }),
  );
  server = await startServer(loadServerConfig({ DATA_DIR: join(dir, 'db'), PORT: '0' }), {
    log: pino({ level: 'silent' }),
    clock,
    noBackground: true,
    terminalActivityIntervalMs: 20,
  });
  ({ url, service } = server);
  repo = new SqlWorkshopRepository(server.db, clock.now);
  await repo.addInstructor('in-1', 't@example.org', 'not used');
  await repo.addWorker({ id: 'wa', url: worker.url, token: worker.token, memoryMb: null });
  await repo.observeWorker('wa', { state: 'up', capacity: 4, vmCount: 0, agentWorkerId: 'wa' }, clock.now(), 2);
});
after(async () => {
  await server?.stop();
  for (const c of closers) await c.close();
  await worker?.api.close();
  rmSync(dir, { recursive: true, force: true });
  rmSync(workspace, { recursive: true, force: true });
});

test(
  'an open terminal keeps its seat active and running however quiet it is; closed, the seat goes idle and stops',
  { timeout: 120_000 },
  async () => {
    const workshop = await service.createWorkshop({
      instructorId: 'in-1',
      name: 'lab',
      seats: 1,
      maxSeats: 1,
      template: 'default',
      vcpus: 1,
      memoryMb: 128,
      startsAt: clock.now(),
      endsAt: clock.now() + 86_400_000,
      idleTimeoutS: 600,
    });
    await service.settled();
    const learner = new Browser(url);
    assert.equal((await learner.json('/api/join', { code: workshop.joinCode, name: 'Ann' })).status, 201);
    const seat = async () => {
      const found = await repo.getSeat(workshop.id, 1);
      assert.ok(found);
      return found;
    };

    const terminal = TerminalClient.connect(`${url.replace('http', 'ws')}/proxy/${workshop.id}/1/terminal`, {
      headers: { cookie: learner.cookieHeader() },
    });
    await terminal.opened;
    assert.equal((await terminal.run('echo open-$((6*7))')).trim(), 'open-42');
    await eventually('the terminal counted', async () => (await seat()).connections === 1);

    // 700 s with the terminal open and nothing typed: past the workshop's 600 s idle timeout.
    offsetMs += 700_000;
    const quietUntil = clock.now();
    await eventually(
      'the open terminal to refresh the seat’s activity',
      async () => ((await seat()).lastActivityAt ?? 0) >= quietUntil,
      10_000,
    );
    assert.equal(await service.stopIdle(), 0, 'a seat with a terminal open is not idle');
    assert.equal((await seat()).state, 'ready');

    terminal.ws.close();
    await terminal.closed;
    await eventually('the terminal taken off the count', async () => (await seat()).connections === 0);
    offsetMs += 700_000;
    assert.equal(await service.stopIdle(), 1, 'closed, it refreshes nothing more: idle past the timeout, stopped');
    assert.equal((await seat()).state, 'stopped');
  },
);
