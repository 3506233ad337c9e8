// The real agent with real QEMU guests, bridges and TAPs, inside this file's own network namespace.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  json,
  requireTestNetns,
  startAgent,
  tapsInNamespace,
  testImagesDir,
  waitForPing,
  type AgentProcess,
} from '../support/agent-process.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import { processStartTime } from '../../src/host/process.ts';
import { qemuOverheadMb } from '../../src/hypervisors/qemu/args.ts';

requireTestNetns();
const BOOT_MS = 120_000;

interface VmJson {
  workshop_id: string;
  seat_id: number;
  ip: string;
  status: string;
  pid: number;
  tap: string;
  restarts: number;
}

async function create(agent: AgentProcess, workshop: string, seat: number): Promise<VmJson> {
  const res = await agent.api('/vms', json({ workshop_id: workshop, seat_id: seat }));
  const body = (await res.json()) as VmJson;
  assert.equal(res.status, 201, JSON.stringify(body));
  return body;
}

describe('agent with QEMU guests', { timeout: 15 * 60_000 }, () => {
  let agent: AgentProcess;
  before(async () => {
    agent = await startAgent({ port: 19090 });
  });
  after(async () => {
    const vms = ((await (await agent.api('/vms')).json()) as { vms: VmJson[] }).vms;
    await Promise.all(vms.map((vm) => agent.api(`/vms/${vm.workshop_id}/${vm.seat_id}`, { method: 'DELETE' })));
    await agent.kill('SIGTERM');
  });

  test('three seats: created in parallel, answer ping, listed, fetched, deleted without a trace', async () => {
    const vms = await Promise.all([1, 2, 3].map((seat) => create(agent, 'class-a', seat)));
    assert.deepEqual(
      vms.map((v) => v.ip),
      ['192.168.100.11', '192.168.100.12', '192.168.100.13'],
    );
    assert.ok(vms.every((v) => v.status === 'running'));
    for (const vm of vms) assert.ok(await waitForPing(vm.ip, BOOT_MS), `${vm.ip} answers ping`);

    // Each VMM runs as its own unprivileged user, under a seccomp filter, without capabilities.
    const status = vms.map((vm) => readFileSync(`/proc/${vm.pid}/status`, 'utf8'));
    const uids = status.map((s) => Number(/^Uid:\s+(\d+)/m.exec(s)?.[1]));
    assert.ok(
      uids.every((uid) => uid !== 0),
      `uids ${uids.join(',')}`,
    );
    assert.equal(new Set(uids).size, 3, 'one user per VM');
    for (const s of status) {
      assert.match(s, /^Seccomp:\s+2$/m);
      assert.match(s, /^CapEff:\s+0+$/m);
      assert.match(s, /^NoNewPrivs:\s+1$/m);
    }

    // ... in a cgroup of its own whose limits follow the VM's size (cgroup v1 here: cpu and memory).
    for (const vm of vms) {
      const groups = readFileSync(`/proc/${vm.pid}/cgroup`, 'utf8');
      const memory = /:memory:(\/clarateach\/[^\n]+)/.exec(groups)?.[1];
      const cpu = /:cpu(?:,cpuacct)?:(\/clarateach\/[^\n]+)/.exec(groups)?.[1];
      assert.equal(memory, `/clarateach/class-a.${vm.seat_id}`, groups);
      assert.equal(cpu, memory);
      const info = (await (await agent.api('/info')).json()) as { acceleration: 'kvm' | 'tcg' };
      const limit = Number(readFileSync(`/sys/fs/cgroup/memory${memory}/memory.limit_in_bytes`, 'utf8'));
      assert.equal(limit, (384 + qemuOverheadMb(info.acceleration)) * 1024 * 1024);
      assert.equal(Number(readFileSync(`/sys/fs/cgroup/cpu${cpu}/cpu.cfs_quota_us`, 'utf8')), 100_000);
    }

    const listed = ((await (await agent.api('/vms?workshop_id=class-a')).json()) as { vms: VmJson[] }).vms;
    assert.deepEqual(
      listed.map((v) => v.seat_id),
      [1, 2, 3],
    );
    const one = (await (await agent.api('/vms/class-a/2')).json()) as VmJson;
    assert.equal(one.ip, '192.168.100.12');
    const health = (await (await agent.api('/health')).json()) as { vm_count: number };
    assert.equal(health.vm_count, 3);

    for (const vm of vms) assert.equal((await agent.api(`/vms/class-a/${vm.seat_id}`, { method: 'DELETE' })).status, 204);
    assert.deepEqual(
      tapsInNamespace().filter((t) => vms.some((v) => v.tap === t)),
      [],
    );
    for (const vm of vms) assert.equal(processStartTime(vm.pid), undefined, `VMM ${vm.pid} is gone`);
    assert.deepEqual(readdirSync(join(agent.stateDir, 'vms')), []);
    for (const vm of vms) assert.equal(existsSync(`/sys/fs/cgroup/memory/clarateach/class-a.${vm.seat_id}`), false, 'cgroup removed');
    assert.equal(await waitForPing('192.168.100.11', 2000), false);
  });

  test('two workshops with the same seat numbers get different addresses and both answer', async () => {
    const a = await create(agent, 'ws-one', 1);
    const b = await create(agent, 'ws-two', 1);
    assert.equal(a.ip, '192.168.100.11');
    assert.notEqual(b.ip, a.ip);
    assert.ok(await waitForPing(a.ip, BOOT_MS));
    assert.ok(await waitForPing(b.ip, BOOT_MS));
    const conflict = await agent.api('/vms', json({ workshop_id: 'ws-one', seat_id: 1 }));
    assert.equal(conflict.status, 409);
    assert.equal(((await conflict.json()) as { code: string }).code, 'vm_exists');
  });

  test('kill -9 on the agent: VMs keep running, are adopted, and a VMM killed meanwhile boots again with its disk', async () => {
    const before = ((await (await agent.api('/vms')).json()) as { vms: VmJson[] }).vms;
    assert.ok(before.length >= 2);
    await agent.kill('SIGKILL');
    for (const vm of before) assert.ok(existsSync(`/proc/${vm.pid}`), `VMM ${vm.pid} survived the agent`);
    const victim = before[0];
    assert.ok(victim);
    const victimLayer = join(agent.stateDir, 'vms', victim.tap, 'layer.ext4');
    const layerInode = statSync(victimLayer).ino;
    process.kill(victim.pid, 'SIGKILL');
    // SIGKILL is asynchronous: the agent must find the VMM dead, not still tearing down its memory.
    for (let waited = 0; processStartTime(victim.pid) !== undefined; waited += 50) {
      assert.ok(waited < 10_000, `VMM ${victim.pid} died`);
      await sleep(50);
    }

    // Debris of a VM nobody knows any more: its (empty) cgroup goes at start.
    mkdirSync('/sys/fs/cgroup/memory/clarateach/gone.7', { recursive: true });
    agent = await startAgent({ port: 19090, stateDir: agent.stateDir });
    assert.equal(existsSync('/sys/fs/cgroup/memory/clarateach/gone.7'), false, 'orphan cgroup removed');
    const afterRestart = ((await (await agent.api('/vms')).json()) as { vms: VmJson[] }).vms;
    assert.deepEqual(
      afterRestart.map((v) => [v.workshop_id, v.seat_id, v.ip]),
      before.map((v) => [v.workshop_id, v.seat_id, v.ip]),
    );
    for (const vm of afterRestart) {
      assert.equal(vm.status, 'running');
      const was = before.find((b) => b.workshop_id === vm.workshop_id && b.seat_id === vm.seat_id);
      if (was === victim) {
        assert.notEqual(vm.pid, victim.pid);
        assert.equal(vm.restarts, 1);
        assert.equal(statSync(victimLayer).ino, layerInode, 'booted again from its kept disk');
      } else {
        assert.equal(vm.pid, was?.pid, 'adopted, not restarted');
      }
      assert.ok(await waitForPing(vm.ip, BOOT_MS), `${vm.ip} answers after the restart`);
    }
  });
});

describe('a create that fails', { timeout: 5 * 60_000 }, () => {
  test('with the kernel missing: 500 create_failed, and no TAP, disk, process or record', async () => {
    const images = mkdtempSync(join(tmpdir(), 'ct-it-images-'));
    for (const f of ['initrd.img', 'rootfs.ext4']) symlinkSync(join(testImagesDir(), f), join(images, f));
    const agent = await startAgent({ port: 19091, imagesDir: images });
    try {
      const tapsBefore = tapsInNamespace();
      const res = await agent.api('/vms', json({ workshop_id: 'broken', seat_id: 1 }));
      const body = (await res.json()) as { code: string; error: string };
      assert.equal(res.status, 500);
      assert.equal(body.code, 'create_failed');
      assert.match(body.error, /vmlinux/);
      assert.deepEqual(tapsInNamespace(), tapsBefore);
      assert.deepEqual(readdirSync(join(agent.stateDir, 'vms')), []);
      assert.equal(((await (await agent.api('/vms/broken/1')).json()) as { code: string }).code, 'vm_not_found');
      assert.equal(((await (await agent.api('/health')).json()) as { vm_count: number }).vm_count, 0);
    } finally {
      await agent.kill('SIGTERM');
    }
  });
});
