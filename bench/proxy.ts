// Through the agent's proxy against straight to the guest: file download throughput and the
// terminal's keystroke round trip, with 1 and with 50 concurrent sessions (over two seats: a
// guest allows 32 shells).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { WebSocket } from 'ws';
import type { BenchAgent, VmJson } from './agent.ts';
import { cpuMsOf, median, mibps, ms, p95, timed, type Results } from './stats.ts';

const FILES_PORT = 3002;
const TERMINAL_PORT = 3001;
/** Loopback ports of the reference relays (one per guest and service). */
const SOCAT_PORT = 19_500;
const KERNEL_RELAY_PORT = 19_520;

export type Headers = Record<string, string>;

export async function download(url: string, headers: Headers = {}): Promise<number> {
  const res = await request(url, { headers });
  if (res.statusCode !== 200) throw new Error(`GET ${url}: ${res.statusCode}`);
  let bytes = 0;
  for await (const chunk of res.body) bytes += (chunk as Buffer).length;
  return bytes;
}

export async function upload(url: string, body: Buffer): Promise<void> {
  const res = await request(url, { method: 'PUT', body });
  await res.body.dump();
  if (res.statusCode >= 300) throw new Error(`PUT ${url}: ${res.statusCode}`);
}

/** Throughput both ways (bytes per ms, medians) and how the pairs compared. */
export interface Throughputs {
  readonly baseline: number;
  readonly ours: number;
  /** Median of each round's ours / baseline: rounds next to each other share the machine's mood. */
  readonly ratio: number;
  readonly lowest: number;
  readonly highest: number;
  readonly runs: number;
  /** CPU per MiB over the measured rounds, when `cpu` named whose (ms; baseline rounds, our rounds). */
  readonly cpuMsPerMib?: { readonly baseline: number; readonly ours: number };
}

/** Whose CPU to read over the measured rounds: this process for the baseline, say, and the agent for ours. */
export interface CpuOf {
  readonly baselinePid: number;
  readonly oursPid: number;
}

/**
 * Parallel downloads, straight (the baseline) and ours, `runs` rounds each. One unmeasured round
 * each way first (the guest's page cache; the proxy's connections to the guest and its compiled
 * code), then the two alternate, so neither gets the warmer machine. An
 * emulated guest's send rate swings by a third from one download to the next here; the ratio is
 * the median over the rounds of each round's pair, printed with its range.
 */
export async function throughputs(
  direct: readonly string[],
  proxied: readonly string[],
  bytesEach: number,
  runs: number,
  headersOf: (url: string) => Headers = () => ({}),
  cpu?: CpuOf,
): Promise<Throughputs> {
  // Every download must be whole: a relay that cut one short would look fast.
  const whole = async (url: string): Promise<void> => {
    const bytes = await download(url, headersOf(url));
    if (bytes !== bytesEach) throw new Error(`GET ${url}: ${bytes} bytes, expected ${bytesEach}`);
  };
  const round = (urls: readonly string[]): Promise<number> => timed(() => Promise.all(urls.map(whole)));
  const cpuMs = { baseline: 0, ours: 0 };
  const measured = async (urls: readonly string[], pid: number | undefined, into: 'baseline' | 'ours'): Promise<number> => {
    const before = pid === undefined ? 0 : cpuMsOf(pid);
    const took = await round(urls);
    if (pid !== undefined) cpuMs[into] += cpuMsOf(pid) - before;
    return took;
  };
  await round(direct);
  await round(proxied);
  const baseline: number[] = [];
  const ours: number[] = [];
  const ratios: number[] = [];
  for (let i = 0; i < runs; i++) {
    baseline.push((bytesEach * direct.length) / (await measured(direct, cpu?.baselinePid, 'baseline')));
    ours.push((bytesEach * proxied.length) / (await measured(proxied, cpu?.oursPid, 'ours')));
    ratios.push((ours.at(-1) ?? NaN) / (baseline.at(-1) ?? NaN));
  }
  const mib = (urls: readonly string[]): number => (runs * urls.length * bytesEach) / 1048576;
  return {
    baseline: median(baseline),
    ours: median(ours),
    ratio: median(ratios),
    lowest: Math.min(...ratios),
    highest: Math.max(...ratios),
    runs,
    ...(cpu ? { cpuMsPerMib: { baseline: cpuMs.baseline / mib(direct), ours: cpuMs.ours / mib(proxied) } } : {}),
  };
}

/** One throughput row: "direct 23.4 MiB/s" | "proxy 22.9 MiB/s (7 rounds: 0.84–1.05)" | the rounds' median ratio. */
export function addThroughputRow(results: Results, section: string, measure: string, ways: [string, string], t: Throughputs): void {
  const rate = (bytesPerMs: number): string => mibps(bytesPerMs * 1000, 1000);
  results.add(
    section,
    measure,
    `${ways[0]} ${rate(t.baseline)}`,
    `${ways[1]} ${rate(t.ours)} (${t.runs} rounds: ${t.lowest.toFixed(2)}–${t.highest.toFixed(2)})`,
    t.ratio,
  );
}

/** One shell; `type` sends a key and resolves with the time until the shell echoed it. */
async function openShell(url: string, headers: Headers): Promise<{ type(key: string): Promise<number>; clearLine(): void; close(): void }> {
  const ws = new WebSocket(url, { headers });
  let output = '';
  let waiter: (() => void) | undefined;
  ws.on('message', (data) => {
    const frame = JSON.parse(String(data)) as { type: string; data?: string };
    if (frame.type === 'output') output += frame.data ?? '';
    waiter?.();
  });
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  const until = (predicate: () => boolean, what: string, timeoutS = 30): Promise<void> =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${url}: no ${what} within ${timeoutS} s`)), timeoutS * 1000);
      const check = (): void => {
        if (predicate()) {
          waiter = undefined;
          clearTimeout(timer);
          resolve();
        } else waiter = check;
      };
      check();
    });
  // Not measured: 25 shells starting at once in one emulated guest can take a while.
  await until(() => output.includes('$ '), 'prompt', 180);
  return {
    async type(key: string): Promise<number> {
      const before = output.length;
      const started = performance.now();
      ws.send(JSON.stringify({ type: 'input', data: key }));
      await until(() => output.slice(before).includes(key), `echo of ${JSON.stringify(key)}`);
      return performance.now() - started;
    },
    clearLine: () => ws.send(JSON.stringify({ type: 'input', data: '\u0015' })), // Ctrl-U: redrawn, not echoed
    close: () => ws.close(),
  };
}

/** Keystroke round trips of shells typing at once, `keys` keys each, one list per shell. */
export async function keystrokesPerShell(
  urls: readonly string[],
  keys: number,
  headersOf: (url: string) => Headers = () => ({}),
): Promise<number[][]> {
  const shells = await Promise.all(urls.map((u) => openShell(u, headersOf(u))));
  const rtts = await Promise.all(
    shells.map(async (shell) => {
      const mine: number[] = [];
      for (let i = 0; i < keys; i++) mine.push(await shell.type(String.fromCharCode(97 + (i % 26))));
      shell.clearLine();
      return mine;
    }),
  );
  shells.forEach((s) => s.close());
  return rtts;
}

/**
 * Keystroke round trips one way (`baseline[i]`) and the other (`ours[i]`, the same shell), side
 * by side: the shells are started first (a few unmeasured keys), then in each of `rounds` rounds
 * every shell types `keys` keys at once, half of them one way and half the other, the halves
 * swapped each round (one shell: the rounds alternate). Shells are expected to alternate between
 * two guests, as the callers make them. Both ways meet the same guests at the same
 * moment: with 50 shells an emulated guest's own delay swings by more than the proxy adds.
 */
export async function keystrokesSideBySide(
  baseline: readonly string[],
  ours: readonly string[],
  keys: number,
  rounds: number,
  headersOf: (url: string) => Headers = () => ({}),
): Promise<[number[], number[]]> {
  await keystrokesPerShell(baseline, 3, headersOf);
  const both: [number[], number[]] = [[], []];
  for (let round = 0; round < rounds; round++) {
    // Shells alternate between the two guests (i % 2): pairs of them go one way, so that each
    // guest has as many shells typing one way as the other.
    const way = (i: number): 0 | 1 => ((Math.floor(i / 2) + round) % 2 === 0 ? 0 : 1);
    const urls = baseline.map((url, i) => (way(i) === 0 ? url : (ours[i] ?? url)));
    const rtts = await keystrokesPerShell(urls, keys, headersOf);
    rtts.forEach((mine, i) => both[way(i)].push(...mine));
  }
  return both;
}

/** A relay child that listens on loopback; undefined (and killed) if it did not start or exited at once. */
async function startRelay(command: string, args: readonly string[]): Promise<ChildProcess | undefined> {
  const relay = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let said = '';
  relay.stderr?.on('data', (chunk: Buffer) => (said += chunk.toString()));
  const started = await new Promise<boolean>((resolve) => {
    relay.once('error', () => resolve(false));
    relay.once('spawn', () => setTimeout(() => resolve(relay.exitCode === null), 300));
  });
  if (started) return relay;
  relay.kill();
  if (said.trim()) process.stdout.write(`  (${command}: ${said.trim().split('\n').pop() ?? ''})\n`);
  return undefined;
}

/** One relay per guest from loopback port `port + i` to `guests[i]:guestPort`; undefined if one did not start. */
async function startRelays(
  start: (port: number, ip: string, guestPort: number) => Promise<ChildProcess | undefined>,
  port: number,
  seats: readonly VmJson[],
  guestPort: number,
  started: ChildProcess[],
): Promise<boolean> {
  for (const [i, vm] of seats.entries()) {
    const relay = await start(port + i, vm.ip, guestPort);
    if (!relay) return false;
    started.push(relay);
  }
  return true;
}

/** socat relaying loopback port `port` to `ip:guestPort`, each connection in a process of its own. */
const startSocat = (port: number, ip: string, guestPort: number): Promise<ChildProcess | undefined> =>
  startRelay('socat', ['-b', '262144', `TCP-LISTEN:${port},fork,reuseaddr,bind=127.0.0.1`, `TCP:${ip}:${guestPort}`]);

/** bench/kernel-relay.c, built here with the system's C compiler; undefined where it cannot be built. */
async function buildKernelRelay(): Promise<string | undefined> {
  const binary = join(mkdtempSync(join(tmpdir(), 'clarateach-kernel-relay-')), 'kernel-relay');
  const source = fileURLToPath(new URL('./kernel-relay.c', import.meta.url));
  const compiler = spawn('cc', ['-O2', '-Wall', '-o', binary, source], { stdio: 'inherit' });
  const built = await new Promise<boolean>((resolve) => {
    compiler.once('error', () => resolve(false));
    compiler.once('exit', (code) => resolve(code === 0));
  });
  return built ? binary : undefined;
}

/**
 * The agent's relay against socat, a relay in C with a process per connection, side by side: the
 * same 50 downloads and 50 typing shells, alternating. Whether the agent relays as cheaply as a
 * plain C relay, apart from what relaying at all costs on this machine. The shells are the
 * sessions the agent's rows made (a guest allows 32). Skipped (said so) where socat is not installed.
 */
async function socatReference(
  results: Results,
  seats: readonly [VmJson, VmJson],
  agentUrls: { readonly files: readonly string[]; readonly shells: readonly string[] },
): Promise<void> {
  const relays: ChildProcess[] = [];
  try {
    if (
      !(await startRelays(startSocat, SOCAT_PORT, seats, FILES_PORT, relays)) ||
      !(await startRelays(startSocat, SOCAT_PORT + 10, seats, TERMINAL_PORT, relays))
    ) {
      process.stdout.write('  (socat is not installed or did not start: no socat rows)\n');
      return;
    }
    // The agent's lists alternate between the two guests (i % 2), and so do socat's ports.
    const files = agentUrls.files.map((url, i) => `http://127.0.0.1:${SOCAT_PORT + (i % 2)}/files/${url.slice(url.lastIndexOf('/') + 1)}`);
    const shells = agentUrls.shells.map(
      (url, i) => `ws://127.0.0.1:${SOCAT_PORT + 10 + (i % 2)}/terminal?session=${new URL(url).searchParams.get('session') ?? ''}`,
    );
    const socat = await throughputs(files, agentUrls.files, 4 * 1024 * 1024, 5);
    addThroughputRow(
      results,
      'proxy',
      'download 4 MiB × 50 at once: the agent against socat, a C relay (256 KiB buffers, a process per connection)',
      ['socat', 'agent'],
      socat,
    );
    const [viaSocat, viaAgent] = await keystrokesSideBySide(shells, agentUrls.shells, 10, 4);
    results.add(
      'proxy',
      `keystroke round trip, ${shells.length} sessions, side by side (4 rounds): the agent against socat (added: ${ms(median(viaAgent) - median(viaSocat))})`,
      `socat ${ms(median(viaSocat))} / ${ms(p95(viaSocat))}`,
      `agent ${ms(median(viaAgent))} / ${ms(p95(viaAgent))}`,
      median(viaAgent) / median(viaSocat),
    );
  } finally {
    for (const relay of relays) relay.kill();
  }
}

/**
 * Straight to the guest against a relay whose bytes stay in the kernel (bench/kernel-relay.c, an
 * eBPF sockmap redirect), the same 50 downloads: what a relay that costs no user-space CPU per
 * byte reaches on this machine, where every relay in user space (the agent's, socat's) takes
 * its CPU from the emulated guests. Skipped (said so) without a C compiler or sockmap support.
 */
async function kernelRelayReference(results: Results, seats: readonly [VmJson, VmJson], directFiles: readonly string[]): Promise<void> {
  const binary = await buildKernelRelay();
  const relays: ChildProcess[] = [];
  try {
    const start = (port: number, ip: string, guestPort: number): Promise<ChildProcess | undefined> =>
      binary ? startRelay(binary, [String(port), ip, String(guestPort)]) : Promise.resolve(undefined);
    if (!(await startRelays(start, KERNEL_RELAY_PORT, seats, FILES_PORT, relays))) {
      process.stdout.write('  (the in-kernel relay could not be built or started: no row for it)\n');
      return;
    }
    // The direct list alternates between the two guests (i % 2), and so do the relay's ports.
    const relayed = directFiles.map((url, i) => `http://127.0.0.1:${KERNEL_RELAY_PORT + (i % 2)}${new URL(url).pathname}`);
    const kernel = await throughputs(directFiles, relayed, 4 * 1024 * 1024, 5);
    addThroughputRow(
      results,
      'proxy',
      'download 4 MiB × 50 at once: an in-kernel relay (eBPF sockmap, bench/kernel-relay.c; baseline: direct)',
      ['direct', 'kernel relay'],
      kernel,
    );
  } finally {
    for (const relay of relays) relay.kill();
    if (binary) rmSync(dirname(binary), { recursive: true, force: true });
  }
}

export async function proxyBench(agent: BenchAgent, results: Results): Promise<void> {
  process.stdout.write('\n## proxy against direct\n');
  const seats: VmJson[] = [];
  for (const seat of [1, 2]) {
    await agent.create('bench-proxy', seat);
    seats.push(await agent.waitReady('bench-proxy', seat));
  }
  const big = randomBytes(64 * 1024 * 1024);
  const small = big.subarray(0, 4 * 1024 * 1024);
  const proxied = (vm: VmJson, path: string): string => `${agent.url}/proxy/${vm.workshop_id}/${vm.seat_id}/files/${path}`;
  const direct = (vm: VmJson, path: string): string => `http://${vm.ip}:${FILES_PORT}/files/${path}`;
  for (const vm of seats) {
    await upload(proxied(vm, 'big.bin'), big);
    await upload(proxied(vm, 'small.bin'), small);
  }
  const [a, b] = seats as [VmJson, VmJson];
  const one = await throughputs([direct(a, 'big.bin')], [proxied(a, 'big.bin')], big.length, 7);
  addThroughputRow(results, 'proxy', 'download 64 MiB, 1 session (ratio: median of the rounds)', ['direct', 'proxy'], one);
  // What relaying costs the agent, far steadier than a throughput ratio: its CPU per MiB over 3
  // proxied downloads, against what this process (the client) spends per MiB receiving 3 direct.
  const cpuPerMib = async (url: string, pid: number): Promise<number> => {
    const before = cpuMsOf(pid);
    for (let i = 0; i < 3; i++) await download(url);
    return (cpuMsOf(pid) - before) / ((3 * big.length) / 1048576);
  };
  const receiving = await cpuPerMib(direct(a, 'big.bin'), process.pid);
  const relaying = await cpuPerMib(proxied(a, 'big.bin'), agent.pid);
  results.add(
    'proxy',
    'CPU per MiB downloaded: the agent relaying (baseline: the client receiving direct)',
    `client ${ms(receiving)}`,
    `agent ${ms(relaying)}`,
    relaying / receiving,
  );
  const fifty = (to: (vm: VmJson, p: string) => string): string[] => Array.from({ length: 50 }, (_, i) => to(i % 2 ? b : a, 'small.bin'));
  const majorsBefore = await agent.fullCollections();
  const many = await throughputs(fifty(direct), fifty(proxied), small.length, 5, undefined, {
    baselinePid: process.pid,
    oursPid: agent.pid,
  });
  const majors = (await agent.fullCollections()) - majorsBefore;
  addThroughputRow(results, 'proxy', 'download 4 MiB × 50 at once, total (ratio: median of the rounds)', ['direct', 'proxy'], many);
  if (many.cpuMsPerMib) {
    results.add(
      'proxy',
      `CPU per MiB, 50 at once: the agent relaying (baseline: the client receiving direct; the agent's full GCs meanwhile: ${majors})`,
      `client ${ms(many.cpuMsPerMib.baseline)}`,
      `agent ${ms(many.cpuMsPerMib.ours)}`,
      many.cpuMsPerMib.ours / many.cpuMsPerMib.baseline,
    );
  }
  const terminal = (vm: VmJson, via: 'proxy' | 'direct', session: string): string =>
    via === 'proxy'
      ? `${agent.url.replace('http:', 'ws:')}/proxy/${vm.workshop_id}/${vm.seat_id}/terminal?session=${session}`
      : `ws://${vm.ip}:${TERMINAL_PORT}/terminal?session=${session}`;
  const sessionsOf = (count: number): string[] => Array.from({ length: count }, (_, i) => `bench-${count}-${i}`);
  for (const sessions of [1, 50]) {
    const urls = (via: 'proxy' | 'direct'): string[] =>
      // The same shells both ways (a guest allows 32, and a detached shell lives on): each run
      // re-attaches to the sessions the first one made.
      sessionsOf(sessions).map((session, i) => terminal(i % 2 ? b : a, via, session));
    // 30 keys a shell and round with 50 shells: 3,000 a way, or the median moves by more than 1 ms between runs.
    const [viaDirect, viaProxy] = await keystrokesSideBySide(urls('direct'), urls('proxy'), sessions === 1 ? 50 : 30, 4);
    results.add(
      'proxy',
      `keystroke round trip, ${sessions} session${sessions > 1 ? 's' : ''}, side by side (4 rounds), median / p95 (added: ${ms(median(viaProxy) - median(viaDirect))})`,
      `direct ${ms(median(viaDirect))} / ${ms(p95(viaDirect))}`,
      `proxy ${ms(median(viaProxy))} / ${ms(p95(viaProxy))}`,
      median(viaProxy) / median(viaDirect),
    );
  }
  await socatReference(results, [a, b], {
    files: fifty(proxied),
    shells: sessionsOf(50).map((session, i) => terminal(i % 2 ? b : a, 'proxy', session)),
  });
  await kernelRelayReference(results, [a, b], fifty(direct));
  for (const vm of seats) await agent.delete(vm.workshop_id, vm.seat_id);
}
