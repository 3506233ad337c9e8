// Concurrent hostile load on the real agent with real QEMU guests and TAPs, inside this file's own
// network namespace: 200 creates and deletes of overlapping seats (3 workshops x 6 seats, a fixed
// random mix), about 50 in flight. Every answer must be a documented one, /health must answer
// throughout, every seat's history must be explainable by some one-at-a-time order, and afterwards
// the store, the TAPs, the VM directories and the QEMU processes must agree exactly.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import fc from 'fast-check';
import { json, requireTestNetns, startAgent, tapsInNamespace, type AgentProcess } from '../support/agent-process.ts';
import { inPool, linearize, processesMentioning, type Observed, type SeatOp } from '../support/concurrency.ts';

requireTestNetns();

const PORT = 19094;
const SEED = Number(process.env['CONCURRENCY_SEED'] ?? 19094);
const WORKSHOPS = ['load-a', 'load-b', 'load-c'];
const SEATS = 6;
const REQUESTS = 200;
const IN_FLIGHT = 50;
const REQUEST_TIMEOUT_MS = 150_000;
const LOAD_BUDGET_MS = 200_000;
const SPREAD_MS = 20_000;
const TAP = /^ct[0-9a-f]{8}$/;

/** The answers the API documents for a create and a delete under load. */
const DOCUMENTED: Record<SeatOp, readonly string[]> = {
  create: ['201', '409 vm_exists', '503 at_capacity', '503 insufficient_memory'],
  delete: ['204', '404 vm_not_found'],
};

interface VmJson {
  workshop_id: string;
  seat_id: number;
  ip: string;
  status: string;
  pid: number | null;
  tap: string;
  restarts: number;
}

interface Planned {
  readonly op: SeatOp;
  readonly workshop: string;
  readonly seat: number;
  /** When to send it, in ms after the load starts (it waits for a free slot if 50 are in flight). */
  readonly at: number;
}

interface Done extends Observed {
  readonly workshop: string;
  readonly seat: number;
  readonly body: string;
}

function key(workshop: string, seat: number): string {
  return `${workshop}/${seat}`;
}

async function listVms(agent: AgentProcess): Promise<VmJson[]> {
  const res = await agent.api('/vms', { signal: AbortSignal.timeout(30_000) });
  assert.equal(res.status, 200);
  return ((await res.json()) as { vms: VmJson[] }).vms;
}

/** Waits until no VM is being created or deleted; returns the list. */
async function settled(agent: AgentProcess, timeoutMs: number): Promise<VmJson[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const vms = await listVms(agent);
    if (!vms.some((vm) => vm.status === 'creating' || vm.status === 'deleting')) return vms;
    assert.ok(
      Date.now() < deadline,
      `VMs still in flight: ${JSON.stringify(vms.filter((v) => v.status === 'creating' || v.status === 'deleting'))}`,
    );
    await sleep(500);
  }
}

interface HostView {
  readonly vms: VmJson[];
  readonly taps: string[];
  readonly dirs: string[];
  readonly procs: { pid: number; args: readonly string[] }[];
}

function hostView(agent: AgentProcess, vms: VmJson[]): HostView {
  const vmsDir = join(agent.stateDir, 'vms');
  return {
    vms,
    taps: tapsInNamespace().sort(),
    dirs: existsSync(vmsDir) ? readdirSync(vmsDir).sort() : [],
    procs: processesMentioning(`${vmsDir}/`),
  };
}

/** Everything that proves state, TAPs, directories and processes agree exactly; throws otherwise. */
function assertAgree(agent: AgentProcess, view: HostView): void {
  const vmsDir = join(agent.stateDir, 'vms');
  const { vms, taps, dirs, procs } = view;
  const summary = JSON.stringify({
    vms: vms.map((v) => [v.workshop_id, v.seat_id, v.status, v.tap, v.pid]),
    taps,
    dirs,
    procs: procs.map((p) => p.pid),
  });
  for (const vm of vms) assert.equal(vm.status, 'running', `every VM runs: ${summary}`);
  assert.ok(
    taps.every((t) => TAP.test(t)),
    `only the agent's TAPs (ct + 8 hex) in the namespace: ${summary}`,
  );
  const vmTaps = vms.map((v) => v.tap).sort();
  assert.equal(new Set(vmTaps).size, vms.length, `distinct TAPs: ${summary}`);
  assert.deepEqual(taps, vmTaps, `TAP devices == VMs: ${summary}`);
  assert.deepEqual(dirs, vmTaps, `VM directories == VMs: ${summary}`);
  for (const tap of vmTaps) assert.ok(existsSync(join(vmsDir, tap, 'layer.ext4')), `${tap} has its writable layer`);
  assert.equal(new Set(vms.map((v) => v.ip)).size, vms.length, `distinct IPs: ${summary}`);
  assert.ok(
    procs.every((p) => /qemu-system/.test(p.args[0] ?? '')),
    `only QEMU processes use the VM directories: ${summary}`,
  );
  assert.deepEqual(
    procs.map((p) => p.pid),
    vms.map((v) => v.pid ?? -1).sort((a, b) => a - b),
    `one QEMU per VM, pid as recorded: ${summary}`,
  );
  for (const vm of vms) {
    const proc = procs.find((p) => p.pid === vm.pid);
    assert.ok(
      proc?.args.some((a) => a.includes(`${vmsDir}/${vm.tap}/`)),
      `QEMU ${vm.pid} runs ${vm.workshop_id}/${vm.seat_id} from its own directory`,
    );
  }
}

/**
 * The host view once it agrees with the store. A guest that powers itself off (its QEMU exits)
 * is booted again by the agent's watchdog within seconds: such a moment may be caught mid-way,
 * so a disagreement is looked at again for a while before it counts.
 */
async function agreeingView(agent: AgentProcess, timeoutMs: number): Promise<HostView> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const view = hostView(agent, await settled(agent, timeoutMs));
    try {
      assertAgree(agent, view);
      return view;
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await sleep(1000);
    }
  }
}

describe('concurrent creates and deletes on the real agent', { timeout: 6 * 60_000 }, () => {
  let agent: AgentProcess;
  before(async () => {
    agent = await startAgent({ port: PORT, env: { CAPACITY: '24', VM_MEMORY_MB: '256', LOG_LEVEL: 'info' } });
  });
  after(async () => {
    if (!agent) return;
    try {
      const vms = await listVms(agent);
      await Promise.all(
        vms.map((vm) => agent.api(`/vms/${vm.workshop_id}/${vm.seat_id}`, { method: 'DELETE', signal: AbortSignal.timeout(60_000) })),
      );
    } catch {
      // the namespace's processes are killed by scripts/in-netns.sh anyway
    }
    await agent.kill('SIGTERM');
  });

  test(`${REQUESTS} overlapping creates and deletes, ${IN_FLIGHT} in flight: documented answers, then state, TAPs, disks and processes agree`, async (t) => {
    // Creates outnumber deletes 3:2 so that seats fill up. A third of the requests come at once
    // (a burst of IN_FLIGHT), the rest spread over SPREAD_MS, so that requests keep landing
    // while other creates and deletes of the same seat are half-way.
    const plan: Planned[] = fc
      .sample(
        fc.record({
          op: fc.constantFrom<SeatOp>('create', 'create', 'create', 'delete', 'delete'),
          workshop: fc.constantFrom(...WORKSHOPS),
          seat: fc.integer({ min: 1, max: SEATS }),
          at: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: SPREAD_MS }), fc.integer({ min: 0, max: SPREAD_MS })),
        }),
        { seed: SEED, numRuns: REQUESTS },
      )
      .sort((a, b) => a.at - b.at);
    const info = (await (await agent.api('/info')).json()) as { hypervisor: string; acceleration: string };
    t.diagnostic(
      `${info.hypervisor} (${info.acceleration}); seed ${SEED}: ${plan.filter((p) => p.op === 'create').length} creates, ${plan.filter((p) => p.op === 'delete').length} deletes on ${WORKSHOPS.length * SEATS} seats`,
    );

    // /health, sampled all through the load.
    const health: { status: number; ms: number }[] = [];
    let loading = true;
    const poller = (async () => {
      while (loading) {
        const started = Date.now();
        try {
          const res = await fetch(`${agent.url}/health`, { signal: AbortSignal.timeout(10_000) });
          await res.arrayBuffer();
          health.push({ status: res.status, ms: Date.now() - started });
        } catch {
          health.push({ status: 0, ms: Date.now() - started });
        }
        await sleep(250);
      }
    })();

    let inFlight = 0;
    let peak = 0;
    const loadStarted = Date.now();
    const budget = AbortSignal.timeout(LOAD_BUDGET_MS);
    let done: Done[];
    try {
      done = await inPool(plan, IN_FLIGHT, async (p): Promise<Done> => {
        const wait = loadStarted + p.at - Date.now();
        if (wait > 0) await sleep(wait);
        const start = Date.now();
        peak = Math.max(peak, ++inFlight);
        const signal = AbortSignal.any([budget, AbortSignal.timeout(REQUEST_TIMEOUT_MS)]);
        const res =
          p.op === 'create'
            ? await agent.api('/vms', { ...json({ workshop_id: p.workshop, seat_id: p.seat }), signal })
            : await agent.api(`/vms/${p.workshop}/${p.seat}`, { method: 'DELETE', signal });
        const body = await res.text();
        const end = Date.now();
        inFlight--;
        let code: string | undefined;
        try {
          code = (JSON.parse(body) as { code?: string }).code;
        } catch {
          code = undefined;
        }
        return { ...p, start, end, status: res.status, code, body };
      });
    } finally {
      loading = false;
      await poller;
    }
    const loadMs = Date.now() - loadStarted;

    // Every answer is a documented one; no 500.
    const outcomes = new Map<string, number>();
    for (const d of done) {
      const outcome = `${d.op} ${d.status}${d.status >= 300 ? ` ${d.code ?? '?'}` : ''}`;
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
      const answer = `${d.status}${d.status >= 300 ? ` ${d.code ?? '?'}` : ''}`;
      assert.ok(
        DOCUMENTED[d.op].includes(answer),
        `${d.op} ${d.workshop}/${d.seat} -> ${d.status} ${d.body.slice(0, 400)}\n${agent.logs().slice(-4000)}`,
      );
    }
    const slowest = (op: SeatOp) => Math.max(0, ...done.filter((d) => d.op === op).map((d) => d.end - d.start));
    t.diagnostic(
      `load took ${loadMs} ms, at most ${peak} requests in flight; ${[...outcomes]
        .sort()
        .map(([k, v]) => `${k} x${v}`)
        .join(', ')}; slowest create ${slowest('create')} ms, delete ${slowest('delete')} ms`,
    );
    assert.ok((outcomes.get('create 201') ?? 0) >= 10 && (outcomes.get('delete 204') ?? 0) >= 5, 'the load did create and delete VMs');
    assert.ok(
      (outcomes.get('create 409 vm_exists') ?? 0) > 0 && (outcomes.get('delete 404 vm_not_found') ?? 0) > 0,
      'the load did overlap',
    );

    // /health answered, every time, all through the load.
    const failedHealth = health.filter((h) => h.status !== 200);
    t.diagnostic(`/health: ${health.length} samples during the load, slowest ${Math.max(...health.map((h) => h.ms))} ms`);
    assert.ok(health.length >= 10, `/health was sampled during the load (${health.length})`);
    assert.deepEqual(failedHealth, [], '/health answered 200 throughout');
    assert.equal(agent.child.exitCode, null, 'the agent is alive');

    // The state is what the answers say: for every seat some one-at-a-time order of its
    // requests, consistent with real time, explains each answer and the seat's final state.
    const view = await agreeingView(agent, 60_000);
    const present = new Set(view.vms.map((vm) => key(vm.workshop_id, vm.seat_id)));
    assert.ok(
      view.vms.every((vm) => WORKSHOPS.includes(vm.workshop_id) && vm.seat_id >= 1 && vm.seat_id <= SEATS),
      'only planned seats exist',
    );
    for (const workshop of WORKSHOPS) {
      for (let seat = 1; seat <= SEATS; seat++) {
        const history = done.filter((d) => d.workshop === workshop && d.seat === seat).sort((a, b) => a.start - b.start);
        const order = linearize(history, present.has(key(workshop, seat)));
        assert.ok(
          order,
          `${workshop}/${seat} (${present.has(key(workshop, seat)) ? 'exists' : 'gone'} at the end) has no one-at-a-time explanation:\n${history
            .map((h) => `  ${h.op} [${h.start - loadStarted}, ${h.end - loadStarted}] -> ${h.status} ${h.code ?? ''}`)
            .join('\n')}`,
        );
      }
    }
    t.diagnostic(
      `after the load: ${view.vms.length} VMs, ${view.taps.length} TAPs, ${view.dirs.length} directories, ${view.procs.length} QEMU processes; restarts ${view.vms.reduce((n, v) => n + v.restarts, 0)}`,
    );
    const health2 = (await (await agent.api('/health')).json()) as { vm_count: number };
    assert.equal(health2.vm_count, view.vms.length);

    // Delete everything at once: nothing may be left.
    const deletes = await Promise.all(
      view.vms.map(async (vm) => {
        const res = await agent.api(`/vms/${vm.workshop_id}/${vm.seat_id}`, {
          method: 'DELETE',
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        });
        return `${vm.workshop_id}/${vm.seat_id} ${res.status} ${await res.text()}`;
      }),
    );
    assert.ok(
      deletes.every((d) => / 204 $/.test(d)),
      deletes.join('\n'),
    );
    const empty = hostView(agent, await settled(agent, 60_000));
    assert.deepEqual(empty.vms, []);
    assert.deepEqual(empty.taps, [], 'no TAP left');
    assert.deepEqual(empty.dirs, [], 'no VM directory left');
    assert.deepEqual(empty.procs, [], 'no QEMU process left');
    assert.equal(((await (await agent.api('/health')).json()) as { vm_count: number }).vm_count, 0);
  });
});
