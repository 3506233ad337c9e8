// Runs the real agent (bin/clarateach.js) as a child process for integration tests, inside the
// network namespace that scripts/in-netns.sh made for this test file.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const ROOT = new URL('../..', import.meta.url).pathname;

/**
 * Refuses to go on unless this process runs in the namespace scripts/in-netns.sh created: every
 * bridge, TAP and VM packet of a test must stay there.
 */
export function requireTestNetns(): string {
  const expected = process.env['CLARATEACH_TEST_NETNS'];
  const actual = spawnSync('ip', ['netns', 'identify', String(process.pid)], { encoding: 'utf8' }).stdout.trim();
  if (!expected || actual !== expected) {
    throw new Error('integration tests create bridges and VMs: run them through scripts/in-netns.sh (npm test does)');
  }
  return actual;
}

export function testImagesDir(): string {
  const dir = process.env['CLARATEACH_TEST_IMAGES'] ?? join(ROOT, '.cache/images');
  return dir;
}

export interface AgentProcess {
  readonly url: string;
  readonly stateDir: string;
  readonly logPath: string;
  readonly child: ChildProcess;
  /** fetch against the agent, with its token when it has one. */
  api(path: string, init?: RequestInit): Promise<Response>;
  kill(signal?: NodeJS.Signals): Promise<void>;
  logs(): string;
}

export interface AgentOptions {
  readonly port: number;
  readonly stateDir?: string;
  readonly imagesDir?: string;
  readonly token?: string;
  readonly env?: Record<string, string>;
}

export async function startAgent(o: AgentOptions): Promise<AgentProcess> {
  requireTestNetns();
  const stateDir = o.stateDir ?? mkdtempSync(join(tmpdir(), 'ct-it-state-'));
  const logPath = join(stateDir, `agent-${Date.now()}.log`);
  const out = createWriteStream(logPath);
  const child = spawn(process.execPath, [join(ROOT, 'bin/clarateach.js'), 'agent'], {
    env: {
      ...process.env,
      PORT: String(o.port),
      HOST: '127.0.0.1',
      STATE_DIR: stateDir,
      IMAGES_DIR: o.imagesDir ?? testImagesDir(),
      HYPERVISOR: 'qemu',
      WORKER_ID: 'it-worker',
      VM_MEMORY_MB: '384',
      LOG_LEVEL: 'debug',
      // A template boot in the background costs a core for seconds: only tests of snapshot start want it.
      SNAPSHOT_START: 'off',
      ...(o.token ? { AGENT_TOKEN: o.token } : {}),
      ...o.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.stdout?.pipe(out);
  child.stderr?.pipe(out);
  const url = `http://127.0.0.1:${o.port}`;
  const agent: AgentProcess = {
    url,
    stateDir,
    logPath,
    child,
    api: (path, init = {}) =>
      fetch(`${url}${path}`, {
        ...init,
        headers: { ...(o.token ? { authorization: `Bearer ${o.token}` } : {}), ...(init.headers as Record<string, string> | undefined) },
      }),
    async kill(signal = 'SIGKILL') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill(signal);
      await exited;
    },
    logs: () => readFileSync(logPath, 'utf8'),
  };
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (child.exitCode !== null) assert.fail(`agent exited with ${child.exitCode}:\n${agent.logs().slice(-3000)}`);
    try {
      if ((await fetch(`${url}/health`)).ok) return agent;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) assert.fail(`agent did not answer /health:\n${agent.logs().slice(-3000)}`);
    await sleep(200);
  }
}

export function json(body: unknown): RequestInit {
  return { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) };
}

/** True once `ping` gets an answer from `ip` within `timeoutMs`. */
export async function waitForPing(ip: string, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (spawnSync('ping', ['-c', '1', '-W', '1', ip]).status === 0) return true;
  }
  return false;
}

export function tapsInNamespace(): string[] {
  const out = spawnSync('ip', ['-j', 'link', 'show', 'type', 'tun'], { encoding: 'utf8' }).stdout;
  return (JSON.parse(out || '[]') as { ifname: string }[]).map((l) => l.ifname);
}
