// Snapshot start with real QEMU guests: the agent makes its default template's snapshot in the
// background; seats created afterwards are restored from it, each with an identity of its own
// (address, MAC, host name, machine id, random state, clock), reachable at its own address only;
// a restored seat whose VMM dies boots again cold from its own layer with its files; a snapshot
// that cannot be restored makes the seat boot cold, and its record says why.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { json, requireTestNetns, startAgent, type AgentProcess } from '../support/agent-process.ts';
import { TerminalClient } from '../support/terminal-client.ts';

requireTestNetns();

interface VmJson {
  seat_id: number;
  ip: string;
  mac: string;
  pid: number;
  restarts: number;
  ready: boolean;
  start: 'snapshot' | 'cold';
  start_reason: string | null;
  timeline: { ready_ms: number | null; steps_ms: Record<string, number> };
}

interface TemplatesJson {
  templates: { name: string; builds: { id: string; current: boolean; snapshots: { state: string; error: string | null }[] }[] }[];
}

const WS = 'snap';

describe('snapshot start', { timeout: 15 * 60_000 }, () => {
  let agent: AgentProcess;
  const terms: TerminalClient[] = [];

  before(async () => {
    agent = await startAgent({ port: 19101, env: { SNAPSHOT_START: 'on', VM_MEMORY_MB: '384' } });
  });
  after(async () => {
    for (const t of terms) await t.close().catch(() => undefined);
    for (const seat of [1, 2, 3]) await agent.api(`/vms/${WS}/${seat}`, { method: 'DELETE' }).catch(() => undefined);
    await agent.kill('SIGTERM');
  });

  const vm = async (seat: number): Promise<VmJson> => (await (await agent.api(`/vms/${WS}/${seat}`)).json()) as VmJson;
  const create = async (seat: number): Promise<VmJson> => {
    const res = await agent.api('/vms', json({ workshop_id: WS, seat_id: seat, wait: 'ready', wait_timeout_s: 180 }));
    const body = await res.text();
    assert.equal(res.status, 201, body);
    return JSON.parse(body) as VmJson;
  };
  const terminal = async (seat: number): Promise<TerminalClient> => {
    const term = TerminalClient.connect(`ws://127.0.0.1:19101/proxy/${WS}/${seat}/terminal`, { timeoutMs: 60_000 });
    await term.opened;
    terms.push(term);
    return term;
  };
  const snapshotState = async (): Promise<{ state: string; error: string | null } | undefined> => {
    const body = (await (await agent.api('/templates')).json()) as TemplatesJson;
    return body.templates.find((t) => t.name === 'default')?.builds.find((b) => b.current)?.snapshots[0];
  };

  test('the default template snapshot is made in the background', async () => {
    for (let waited = 0; ; waited += 1000) {
      const snapshot = await snapshotState();
      if (snapshot?.state === 'ready') break;
      assert.notEqual(snapshot?.state, 'failed', `snapshot failed: ${snapshot?.error}`);
      assert.ok(waited < 240_000, `snapshot ready in time: ${JSON.stringify(snapshot)}`);
      await sleep(1000);
    }
  });

  test('two seats restored from one snapshot have identities and random state of their own', async () => {
    const [one, two] = [await create(1), await create(2)];
    for (const seat of [one, two]) {
      assert.equal(seat.start, 'snapshot', `seat ${seat.seat_id} restored: ${seat.start_reason}`);
      assert.equal(seat.start_reason, null);
      assert.ok(seat.ready);
      assert.ok(seat.timeline.steps_ms['vmm'] !== undefined, JSON.stringify(seat.timeline));
    }
    const probe =
      'cat /etc/machine-id; hostname; ip -4 -o addr show dev eth0 | tr -s " " | cut -d" " -f4; cat /sys/class/net/eth0/address; ' +
      'head -c 16 /dev/urandom | od -An -tx1 | tr -d " \\n"; echo; date +%s; ip -4 route show default';
    const seen = [];
    for (const seat of [one, two]) {
      const out = (await (await terminal(seat.seat_id)).run(probe)).trim().split('\n');
      assert.equal(out.length, 7, out.join('\n'));
      const [machineId, host, address, mac, random, clock, route] = out as [string, string, string, string, string, string, string];
      assert.match(machineId, /^[0-9a-f]{32}$/);
      assert.equal(host, `seat-${seat.seat_id}`);
      assert.equal(address, `${seat.ip}/24`, 'its own address, and only that one');
      assert.equal(mac, seat.mac);
      assert.match(random, /^[0-9a-f]{32}$/);
      assert.ok(Math.abs(Number(clock) - Date.now() / 1000) < 30, `guest clock ${clock} is the host's time`);
      assert.match(route, /^default via 192\.168\.100\.1 dev eth0/, 'its default route is the bridge');
      seen.push({ machineId, random });
    }
    assert.notEqual(seen[0]?.machineId, seen[1]?.machineId, 'machine ids differ');
    assert.notEqual(seen[0]?.random, seen[1]?.random, '/dev/urandom output differs');

    // Each answers at its own address only: seat 1's address reaches seat 1's files service.
    for (const seat of [one, two]) {
      const res = await fetch(`http://${seat.ip}:3002/health`).catch((e: unknown) => e as Error);
      assert.ok(!(res instanceof Error) && res.ok, `seat ${seat.seat_id} answers at ${seat.ip}`);
    }
    const term = await terminal(1);
    assert.match(await term.run(`ping -c 1 -W 2 ${two.ip} >/dev/null; echo ping=$?`), /ping=1/, 'seats cannot reach each other');
  });

  test('a restored seat whose VMM dies boots again, cold, from its own layer with its files', async () => {
    const put = await agent.api(`/proxy/${WS}/1/files/kept.txt`, { method: 'PUT', body: 'written after the restore' });
    assert.ok(put.ok, `upload: ${put.status}`);
    const before = await vm(1);
    process.kill(before.pid, 'SIGKILL');
    let again = await vm(1);
    for (let waited = 0; !(again.restarts === 1 && again.ready); waited += 500) {
      assert.ok(waited < 180_000, `seat 1 booted again and ready: ${JSON.stringify(again)}`);
      await sleep(500);
      again = await vm(1);
    }
    assert.equal(await (await agent.api(`/proxy/${WS}/1/files/kept.txt`)).text(), 'written after the restore');
    const out = await (await terminal(1)).run('hostname; ip -4 -o addr show dev eth0 | wc -l');
    assert.deepEqual(out.trim().split('\n'), ['seat-1', '1']);
  });

  test('a snapshot that cannot be restored makes the seat boot cold, with the reason recorded', async () => {
    const dir = join(agent.stateDir, 'snapshots', 'default');
    const [build] = readdirSync(dir);
    assert.ok(build);
    const [shape] = readdirSync(join(dir, build));
    assert.ok(shape);
    truncateSync(join(dir, build, shape, 'state'), 100);
    const seat = await create(3);
    assert.equal(seat.start, 'cold');
    assert.match(seat.start_reason ?? '', /restore failed/);
    const out = await (await terminal(3)).run('hostname');
    assert.equal(out.trim(), 'seat-3');
    const log = agent.logs();
    assert.match(log, /snapshot restore failed; booting cold/);
  });
});
