// The operator CLI as operators run it: the real `clarateach` process against an in-process agent
// (stand-in VMs on a loopback subnet) whose seat runs the real guest file and terminal servers on
// its loopback address. Tables, --json, exit codes, one-line errors, cp both ways, shell detach
// and re-attach in a real pseudo-terminal.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as pty from 'node-pty';
import { buildTestApi, type TestApi } from '../../../test/support/api.ts';
import { startFilesServer } from '../../guest/files/server.ts';
import { startTerminalServer } from '../../guest/terminal/server.ts';
import { silentLogger } from '../../guest/shared/log.ts';
import { GUEST_PORTS } from '../../guest/contract.ts';

const BIN = new URL('../../../bin/clarateach.js', import.meta.url).pathname;
const TOKEN = 'cli-test-agent-token';
const SUBNET = `127.${64 + (process.pid % 128)}.${1 + Math.floor(Math.random() * 250)}`;

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

describe('the operator CLI', { timeout: 120_000 }, () => {
  let api: TestApi;
  let url: string;
  let workspace: string;
  let scratch: string;
  const servers: { close(): Promise<void> }[] = [];

  const cli = (args: readonly string[], env: Record<string, string> = {}): Promise<Run> =>
    new Promise((resolve) => {
      const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, AGENT_URL: url, AGENT_TOKEN: TOKEN, ...env } });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
      child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
      child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    });

  before(async () => {
    api = await buildTestApi({ agentToken: TOKEN, secret: 's'.repeat(40), capacity: 4, cidr: `${SUBNET}.1/24`, guestAnswers: true });
    url = await api.app.listen({ host: '127.0.0.1', port: 0 });
    await api.manager.create({ workshopId: 'lab', seatId: 1, vcpus: 1, memoryMb: 256, template: 'default' });
    workspace = mkdtempSync(join(tmpdir(), 'ct-cli-ws-'));
    scratch = mkdtempSync(join(tmpdir(), 'ct-cli-local-'));
    const ip = `${SUBNET}.11`;
    servers.push(
      await startFilesServer({
        config: { host: ip, port: GUEST_PORTS.files, workspaceDir: workspace, maxUploadBytes: 64 * 1024 * 1024 },
        logger: silentLogger,
      }),
    );
    servers.push(
      await startTerminalServer({
        config: {
          host: ip,
          port: GUEST_PORTS.terminal,
          workspaceDir: workspace,
          shell: '/bin/bash',
          detachedTtlS: 60,
          scrollbackBytes: 64 * 1024,
        },
        logger: silentLogger,
        env: { PATH: process.env['PATH'] ?? '/usr/bin:/bin', HOME: workspace, LANG: 'C.UTF-8' },
      }),
    );
  });
  after(async () => {
    for (const s of servers) await s.close();
    await api.close();
    rmSync(workspace, { recursive: true, force: true });
    rmSync(scratch, { recursive: true, force: true });
  });

  test('health and vm commands: tables by default, the API JSON with --json', async () => {
    const health = await cli(['health']);
    assert.equal(health.code, 0, health.stderr);
    assert.match(health.stdout, /^test-worker: healthy, 1\/4 VMs, up \d+ s\n$/);
    assert.equal(JSON.parse((await cli(['health', '--json'])).stdout).worker_id, 'test-worker');

    const created = await cli(['vm', 'create', 'lab', '2', '--memory-mb', '256']);
    assert.equal(created.code, 0, created.stderr);
    const ls = await cli(['vm', 'ls']);
    const lines = ls.stdout.trimEnd().split('\n');
    assert.match(lines[0] ?? '', /^WORKSHOP\s+SEAT\s+IP\s+STATUS/);
    assert.deepEqual(
      lines.slice(1).map((l) => l.split(/\s+/).slice(0, 4)),
      [
        ['lab', '1', `${SUBNET}.11`, 'running'],
        ['lab', '2', `${SUBNET}.12`, 'running'],
      ],
    );
    const json = JSON.parse((await cli(['--json', 'vm', 'get', 'lab', '2'])).stdout);
    assert.equal(json.memory_mb, 256);
    assert.equal((await cli(['vm', 'rm', 'lab', '2'])).stdout, 'deleted lab/2\n');
    assert.equal(JSON.parse((await cli(['vm', 'ls', '--json'])).stdout).vms.length, 1);
  });

  test('exit codes scripts can trust, errors on one line', async () => {
    const missing = await cli(['vm', 'get', 'lab', '9']);
    assert.equal(missing.code, 3);
    assert.match(missing.stderr, /^clarateach: no VM for workshop "lab" seat 9 \(vm_not_found\)\n$/);
    const refused = await cli(['vm', 'ls'], { AGENT_TOKEN: 'wrong-token' });
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /\(unauthorized\)\n$/);
    const usage = await cli(['vm', 'create', 'lab']);
    assert.equal(usage.code, 2);
    assert.equal(usage.stderr.trimEnd().split('\n').length, 1);
    assert.equal((await cli(['vm', 'get', 'lab', 'one'])).code, 2);
    const down = await cli(['health'], { AGENT_URL: 'http://127.0.0.1:9' });
    assert.equal(down.code, 4);
    assert.match(down.stderr, /cannot reach the agent at http:\/\/127\.0\.0\.1:9: ECONNREFUSED/);
    const duplicate = await cli(['vm', 'create', 'lab', '1']);
    assert.equal(duplicate.code, 1);
    assert.match(duplicate.stderr, /\(vm_exists\)/);
  });

  test('vm logs -f prints each new console line once, and ends when the VM is deleted or on Ctrl-C', async () => {
    await cli(['vm', 'create', 'lab', '3']);
    const consoleLog = join(api.dir, 'state', 'vms', api.manager.get('lab', 3).tapName, 'console.log');
    appendFileSync(consoleLog, 'line one\n');
    const follow = (): { out: () => string; err: () => string; child: ReturnType<typeof spawn>; exited: Promise<number> } => {
      const child = spawn(process.execPath, [BIN, 'vm', 'logs', 'lab', '3', '-f'], {
        env: { ...process.env, AGENT_URL: url, AGENT_TOKEN: TOKEN },
      });
      let out = '';
      let err = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.stderr.on('data', (c: Buffer) => (err += c.toString()));
      return { out: () => out, err: () => err, child, exited: new Promise((resolve) => child.on('close', (code) => resolve(code ?? -1))) };
    };
    const until = async (what: () => boolean): Promise<void> => {
      for (let waited = 0; !what(); waited += 50) {
        assert.ok(waited < 15_000, 'in time');
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    const follower = follow();
    await until(() => follower.out().includes('line one'));
    appendFileSync(consoleLog, 'line two\n');
    await until(() => follower.out().includes('line two'));
    assert.equal(follower.out(), 'line one\nline two\n', 'each line once');
    const interrupted = follow();
    await until(() => interrupted.out().includes('line two'));
    interrupted.child.kill('SIGINT');
    assert.equal(await interrupted.exited, 0, 'Ctrl-C ends it cleanly');
    await cli(['vm', 'rm', 'lab', '3']);
    assert.equal(await follower.exited, 0);
    assert.match(follower.err(), /lab\/3 was deleted/);
  });

  test("token prints the learner's workspace URL", async () => {
    const run = await cli(['token', 'lab', '1', '--ttl', '120']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, new RegExp(`^${url.replace(/[.]/g, '\\.')}/workspace/lab/1/\\?token=[\\w.-]+\\n$`));
  });

  test('cp streams a file into the seat and back, byte for byte, with progress', async () => {
    const data = randomBytes(8 * 1024 * 1024 + 13);
    writeFileSync(join(scratch, 'data.bin'), data);
    const up = await cli(['cp', '--progress', join(scratch, 'data.bin'), 'lab/1:/in/data.bin']);
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stderr, /\(100%\)/);
    assert.ok(readFileSync(join(workspace, 'in', 'data.bin')).equals(data));
    const down = await cli(['cp', 'lab/1:/in/data.bin', scratch.concat('/back.bin')]);
    assert.equal(down.code, 0, down.stderr);
    assert.ok(readFileSync(join(scratch, 'back.bin')).equals(data));
    const gone = await cli(['cp', 'lab/1:/nope.txt', join(scratch, 'x')]);
    assert.equal(gone.code, 3);
    assert.equal((await cli(['cp', 'a', 'b'])).code, 2, 'one side must be a seat');
    const directory = await cli(['cp', scratch, 'lab/1:/x']);
    assert.equal(directory.code, 1);
    assert.match(directory.stderr, /is not a file\n$/);
  });

  test('shell: a command in a real terminal, Ctrl-] detaches, --session re-attaches with the history', async () => {
    const inPty = (
      args: string[],
    ): { output: () => string; waitFor(text: string | RegExp): Promise<void>; write(s: string): void; exited: Promise<number> } => {
      const p = pty.spawn(process.execPath, [BIN, 'shell', 'lab', '1', ...args], {
        cols: 100,
        rows: 30,
        env: { ...process.env, AGENT_URL: url, AGENT_TOKEN: TOKEN } as Record<string, string>,
      });
      let out = '';
      p.onData((d) => (out += d));
      const exited = new Promise<number>((resolve) => p.onExit(({ exitCode }) => resolve(exitCode)));
      return {
        output: () => out,
        write: (s) => p.write(s),
        exited,
        async waitFor(text) {
          const deadline = Date.now() + 60_000;
          while (!(typeof text === 'string' ? out.includes(text) : text.test(out))) {
            if (Date.now() > deadline) throw new Error(`no ${String(text)} in:\n${out}`);
            await new Promise((r) => setTimeout(r, 50));
          }
        },
      };
    };
    const first = inPty([]);
    await first.waitFor(/[$#] /);
    first.write('echo from-the-cli-$((6*7)); stty size\r');
    await first.waitFor('from-the-cli-42');
    await first.waitFor('30 100');
    first.write('\x1d');
    await first.waitFor(/detached from session (cli-[0-9a-f]+)/);
    assert.equal(await first.exited, 0);
    const session = /detached from session (cli-[0-9a-f]+)/.exec(first.output())?.[1] ?? '';

    const again = inPty(['--session', session]);
    await again.waitFor('from-the-cli-42'); // the scrollback, replayed
    again.write('exit 7\r');
    assert.equal(await again.exited, 7, 'the shell exit code is the command exit code');
  });
});
