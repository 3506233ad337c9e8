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
  /** Another namespace this test made (see `peerNamespace`): the agent runs there, on `host`. */
  readonly netns?: string;
  /** Its listening address (default 127.0.0.1; anything else needs `token`). */
  readonly host?: string;
}

export async function startAgent(o: AgentOptions): Promise<AgentProcess> {
  requireTestNetns();
  const stateDir = o.stateDir ?? mkdtempSync(join(tmpdir(), 'ct-it-state-'));
  const logPath = join(stateDir, `agent-${Date.now()}.log`);
  const out = createWriteStream(logPath);
  const host = o.host ?? '127.0.0.1';
  const command = [process.execPath, join(ROOT, 'bin/clarateach.js'), 'agent'];
  // nsenter switches the network namespace only (`ip netns exec` also mounts a /sys of its own,
  // without the cgroup hierarchies) and execs the command: the child's pid is the agent's.
  const [file = '', ...args] = o.netns ? ['nsenter', `--net=/run/netns/${o.netns}`, '--', ...command] : command;
  const child = spawn(file, args, {
    env: {
      ...process.env,
      PORT: String(o.port),
      HOST: host,
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
  const url = `http://${host}:${o.port}`;
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

export interface PeerNamespace {
  readonly name: string;
  /** This namespace's end of the link. */
  readonly localIp: string;
  /** The peer's address, where an agent started in it with `host` listens. */
  readonly peerIp: string;
  remove(): void;
}

/**
 * A second namespace, made by this test inside its own, joined to it by a veth pair on a /30 of
 * its own: a second worker's bridge, TAPs and firewall stay apart from the first one's.
 */
export function peerNamespace(index: number): PeerNamespace {
  // Named after ours, so scripts/in-netns.sh removes it even if the test dies before its cleanup.
  const name = `${requireTestNetns()}-peer${index}`;
  const local = `ctp${process.pid % 100000}${index}a`.slice(0, 15);
  const peer = `ctp${process.pid % 100000}${index}b`.slice(0, 15);
  const localIp = `10.231.${index}.1`;
  const peerIp = `10.231.${index}.2`;
  const ip = (...args: string[]): void => {
    const result = spawnSync('ip', args, { encoding: 'utf8' });
    if (result.status !== 0) throw new Error(`ip ${args.join(' ')}: ${result.stderr.trim()}`);
  };
  ip('netns', 'add', name);
  try {
    ip('link', 'add', local, 'type', 'veth', 'peer', 'name', peer, 'netns', name);
    ip('addr', 'add', `${localIp}/30`, 'dev', local);
    ip('link', 'set', local, 'up');
    ip('-n', name, 'addr', 'add', `${peerIp}/30`, 'dev', peer);
    ip('-n', name, 'link', 'set', peer, 'up');
    ip('-n', name, 'link', 'set', 'lo', 'up');
  } catch (error) {
    spawnSync('ip', ['netns', 'del', name]);
    throw error;
  }
  // Deleting the namespace takes its end of the veth pair, and so the pair, with it.
  return { name, localIp, peerIp, remove: () => void spawnSync('ip', ['netns', 'del', name]) };
}
