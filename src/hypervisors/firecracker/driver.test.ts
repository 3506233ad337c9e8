// The Firecracker driver against the stand-in (test/support/firecracker/fake-firecracker.ts), which checks every
// request against Firecracker's OpenAPI document and logs any violation.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { listVmCgroups } from '../../host/cgroups/index.ts';
import type { HypervisorDriver, VmmProcess } from '../../vms/ports.ts';
import { describeProcess, processStartTime, waitForExit } from '../../host/process.ts';
import { FirecrackerApiClient, socketAnswers } from './api-client.ts';
import { bootCalls } from './boot-requests.ts';
import { API_SOCKET_NAME, firecrackerInstanceId } from './command.ts';
import { createFirecrackerDriver, FirecrackerStartError } from './index.ts';
import { loggedPids, loggedRequests, readJsonLines } from '../../../test/support/firecracker/fake-firecracker-shim.ts';
import { createVmFixture, type VmFixture } from '../../../test/support/firecracker/fixtures.ts';
import { capturingLogger } from '../../../test/support/logs.ts';

/** Node + tsx start in a few hundred ms; leave room on a loaded CI machine. */
const SOCKET_TIMEOUT_MS = 20_000;

function sessionOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[3]);
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  return promise.then(
    () => assert.fail('expected a rejection'),
    (error: unknown) => {
      assert.ok(error instanceof Error);
      return error;
    },
  );
}

describe('Firecracker driver', () => {
  let fx: VmFixture;
  let socketPath: string;
  const logs: string[] = [];
  // Unit tests need no root: real cgroups are tested in test/integration/firecracker-cgroups.test.ts.
  const cgroup = false;

  beforeEach(async () => {
    fx = await createVmFixture('my-test.1');
    socketPath = join(fx.spec.runDir, API_SOCKET_NAME);
    logs.length = 0;
  });

  afterEach(async () => {
    await fx.cleanup();
  });

  const driverWith = (firecrackerBin: string): Promise<HypervisorDriver> =>
    createFirecrackerDriver({ firecrackerBin, apiSocketTimeoutMs: SOCKET_TIMEOUT_MS, log: capturingLogger(logs), cgroup });

  test('cgroup: false runs the VMM without a cgroup', async () => {
    const driver = await createFirecrackerDriver({
      firecrackerBin: fx.fakeFirecracker(),
      apiSocketTimeoutMs: SOCKET_TIMEOUT_MS,
      cgroup: false,
    });
    const proc = await driver.start(fx.spec);
    if (cgroup) assert.deepEqual(await listVmCgroups(cgroup), []);
    await driver.stop(fx.spec, proc, 5_000);
  });

  test('info', async () => {
    assert.deepEqual((await createFirecrackerDriver({ firecrackerBin: 'firecracker' })).info, { name: 'firecracker', acceleration: 'kvm' });
  });

  test('create -> isAlive -> stop: exact request sequence, no spec violation, graceful exit', async () => {
    writeFileSync(fx.spec.consoleLogPath, 'line from an earlier boot\n');
    const driver = await driverWith(fx.fakeFirecracker());

    const proc = await driver.start(fx.spec);
    assert.deepEqual(proc, describeProcess(proc.pid), 'pid and start time of the running VMM');
    assert.equal(driver.isAlive(proc), true);
    assert.equal(driver.isAlive({ pid: proc.pid, startTime: proc.startTime + 1 }), false, 'a reused pid is not our VMM');
    assert.deepEqual(loggedPids(fx.requestLog), [proc.pid], 'the pid is the VMM itself, not a wrapper');
    assert.notEqual(sessionOf(proc.pid), sessionOf(process.pid), 'detached: in its own session');

    const info = await new FirecrackerApiClient(socketPath).describeInstance();
    assert.equal(info.state, 'Running');
    assert.equal(info.id, firecrackerInstanceId('my-test.1'));

    const consoleText = readFileSync(fx.spec.consoleLogPath, 'utf8');
    assert.ok(consoleText.startsWith('line from an earlier boot\n'), 'console log is appended to, not truncated');
    assert.match(consoleText, /Linux version .*fake/);
    assert.match(consoleText, /Command line: console=ttyS0 reboot=k panic=1 pci=off clarateach.halt=reboot ip=10\.0\.0\.2::10\.0\.0\.1/);

    const started = Date.now();
    await driver.stop(fx.spec, proc, 10_000);
    assert.ok(Date.now() - started < 5_000, 'the guest powered off on Ctrl-Alt-Del; no need to wait for the grace period');
    assert.equal(driver.isAlive(proc), false);
    assert.equal(existsSync(socketPath), false, 'socket removed');
    assert.match(readFileSync(fx.spec.consoleLogPath, 'utf8'), /reboot: Restarting system/);
    assert.ok(
      readJsonLines(fx.requestLog).some((e) => e.event === 'exit' && e.code === 0),
      'exited by itself, not killed',
    );

    assert.deepEqual(loggedRequests(fx.requestLog), [
      ...bootCalls(fx.spec).map((c) => ({ method: c.method, path: c.path, body: c.body, status: 204 })),
      { method: 'GET', path: '/', body: undefined, status: 200 }, // this test's describeInstance
      { method: 'PUT', path: '/actions', body: { action_type: 'SendCtrlAltDel' }, status: 204 },
    ]);
    assert.deepEqual(
      loggedRequests(fx.requestLog).map((r) => `${r.method} ${r.path} ${JSON.stringify(r.body ?? null)}`),
      [
        'PUT /machine-config {"vcpu_count":2,"mem_size_mib":512}',
        `PUT /boot-source {"kernel_image_path":"${fx.spec.kernelPath}","initrd_path":"${fx.spec.initrdPath}","boot_args":"console=ttyS0 reboot=k panic=1 pci=off clarateach.halt=reboot ${fx.spec.kernelArgs}"}`,
        `PUT /drives/base {"drive_id":"base","path_on_host":"${fx.spec.baseDiskPath}","is_root_device":false,"is_read_only":true}`,
        `PUT /drives/layer {"drive_id":"layer","path_on_host":"${fx.spec.layerDiskPath}","is_root_device":false,"is_read_only":false}`,
        'PUT /network-interfaces/eth0 {"iface_id":"eth0","host_dev_name":"ct-tap1","guest_mac":"06:00:0a:00:00:02"}',
        'PUT /actions {"action_type":"InstanceStart"}',
        'GET / null',
        'PUT /actions {"action_type":"SendCtrlAltDel"}',
      ],
      'spelled out, independent of bootCalls()',
    );
    assert.deepEqual(readJsonLines(fx.violationsLog), [], 'no request violated the OpenAPI document');
  });

  test('removes a stale socket before starting', async () => {
    writeFileSync(socketPath, 'left by a VMM that died');
    const driver = await driverWith(fx.fakeFirecracker());
    const proc = await driver.start(fx.spec);
    assert.equal(driver.isAlive(proc), true);
    await driver.stop(fx.spec, proc, 5_000);
  });

  test('refuses to start over a VMM that still answers on the socket', async () => {
    const driver = await driverWith(fx.fakeFirecracker());
    const proc = await driver.start(fx.spec);
    const error = await rejection(driver.start(fx.spec));
    assert.match(error.message, /already answers/);
    assert.equal(driver.isAlive(proc), true, 'the running VMM is left alone');
    assert.equal(await socketAnswers(socketPath), true);
    await driver.stop(fx.spec, proc, 5_000);
  });

  test("a missing kernel: rejects with Firecracker's fault message, leaves no process and no socket", async () => {
    const driver = await driverWith(fx.fakeFirecracker());
    const error = await rejection(driver.start({ ...fx.spec, kernelPath: join(fx.dir, 'no-such-vmlinux') }));
    assert.ok(error instanceof FirecrackerStartError);
    assert.equal(error.faultMessage, 'Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)');
    assert.match(error.message, /PUT \/boot-source failed \(400\): Boot source error: The kernel file cannot be opened/);
    const [pid] = loggedPids(fx.requestLog);
    assert.ok(pid !== undefined);
    assert.equal(processStartTime(pid), undefined, 'firecracker was killed');
    assert.equal(existsSync(socketPath), false, 'socket removed');
    assert.deepEqual(readJsonLines(fx.violationsLog), []);
    if (cgroup) assert.deepEqual(await listVmCgroups(cgroup), [], 'no cgroup left');
  });

  test('InstanceStart refused: rejects with the fault message, leaves nothing behind', async () => {
    const driver = await driverWith(
      fx.fakeFirecracker({ failInstanceStart: 'Kvm error: Error creating KVM object: Permission denied (os error 13)' }),
    );
    const error = await rejection(driver.start(fx.spec));
    assert.ok(error instanceof FirecrackerStartError);
    assert.equal(error.faultMessage, 'Start microvm error: Kvm error: Error creating KVM object: Permission denied (os error 13)');
    assert.match(error.message, /PUT \/actions failed \(400\)/);
    assert.deepEqual(loggedRequests(fx.requestLog).at(-1), {
      method: 'PUT',
      path: '/actions',
      body: { action_type: 'InstanceStart' },
      status: 400,
      fault: error.faultMessage,
    });
    const [pid] = loggedPids(fx.requestLog);
    assert.ok(pid !== undefined);
    assert.equal(processStartTime(pid), undefined);
    assert.equal(existsSync(socketPath), false);
    assert.deepEqual(readJsonLines(fx.violationsLog), []);
  });

  test('a VMM that dies before its socket appears: rejects with its output', async () => {
    const bin = join(fx.dir, 'firecracker-broken');
    writeFileSync(bin, '#!/bin/sh\necho "Error: Kvm(OpenKvm(Os { code: 2 }))" >&2\nexit 1\n');
    chmodSync(bin, 0o755);
    const error = await rejection((await driverWith(bin)).start(fx.spec));
    assert.match(error.message, /exited with code 1 before its API socket came up/);
    assert.match(error.message, /Error: Kvm\(OpenKvm/);
    assert.equal(existsSync(socketPath), false);
  });

  test('a missing binary: rejects', async () => {
    const error = await rejection((await driverWith(join(fx.dir, 'no-such-firecracker'))).start(fx.spec));
    assert.match(error.message, /cannot run .*no-such-firecracker.*ENOENT/);
  });

  test('stop kills a guest that ignores Ctrl-Alt-Del once the grace period is over', async () => {
    const driver = await driverWith(fx.fakeFirecracker({ ignoreCtrlAltDel: true }));
    const proc = await driver.start(fx.spec);
    const started = Date.now();
    await driver.stop(fx.spec, proc, 400);
    assert.ok(Date.now() - started >= 350, 'waited for the grace period');
    assert.equal(driver.isAlive(proc), false);
    assert.equal(existsSync(socketPath), false);
    assert.ok(logs.some((m) => /killing pid/.test(m)));
  });

  test('stop does not sit out the grace period when the guest powered off (Firecracker lives on)', async () => {
    const driver = await driverWith(fx.fakeFirecracker({ guestPowersOff: true }));
    const proc = await driver.start(fx.spec);
    const started = Date.now();
    await driver.stop(fx.spec, proc, 20_000);
    assert.ok(Date.now() - started < 5_000, 'killed as soon as the console showed the power-down');
    assert.equal(driver.isAlive(proc), false);
    assert.equal(existsSync(socketPath), false);
    assert.ok(logs.some((m) => /halted instead of rebooting/.test(m)));
  });

  test('stop of a VMM that is already gone resolves and cleans up', async () => {
    const driver = await driverWith(fx.fakeFirecracker());
    const proc = await driver.start(fx.spec);
    process.kill(proc.pid, 'SIGKILL');
    assert.equal(await waitForExit(proc, 10_000), true);
    assert.equal(existsSync(socketPath), true, 'a crashed VMM leaves its socket');
    await driver.stop(fx.spec, proc, 5_000);
    assert.equal(existsSync(socketPath), false);
    // A record of a process that never existed in this boot.
    const ghost: VmmProcess = { pid: 2 ** 22 + 1, startTime: 1 };
    await driver.stop(fx.spec, ghost, 5_000);
  });

  test('the VMM survives the agent being killed -9, and a new agent stops it', async () => {
    const bin = fx.fakeFirecracker();
    const agentScript = fileURLToPath(new URL('../../../test/support/firecracker/agent-child.ts', import.meta.url));
    const agent = spawn(
      process.execPath,
      ['--import', import.meta.resolve('tsx'), agentScript, bin, JSON.stringify(fx.spec), JSON.stringify({ cgroup })],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    let out = '';
    let err = '';
    agent.stdout.on('data', (c: Buffer) => (out += c.toString()));
    agent.stderr.on('data', (c: Buffer) => (err += c.toString()));
    const agentExit = once(agent, 'exit');
    const deadline = Date.now() + 30_000;
    while (!out.includes('\n') && agent.exitCode === null && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    assert.ok(out.includes('\n'), `the agent started a VM: ${err}`);
    const proc = JSON.parse(out.trim()) as VmmProcess;

    agent.kill('SIGKILL');
    await agentExit;
    await new Promise((r) => setTimeout(r, 300));

    const driver = await driverWith(bin); // the restarted agent: the VMM is not its child
    assert.equal(driver.isAlive(proc), true, 'VMM outlived its parent');
    assert.equal((await new FirecrackerApiClient(socketPath).describeInstance()).state, 'Running');
    await driver.stop(fx.spec, proc, 10_000);
    assert.equal(driver.isAlive(proc), false);
    assert.equal(existsSync(socketPath), false);
    assert.deepEqual(readJsonLines(fx.violationsLog), []);
  });
});
