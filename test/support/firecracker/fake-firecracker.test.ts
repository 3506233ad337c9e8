// The stand-in must catch bad requests (so driver tests can fail) and behave like Firecracker
// where the driver relies on it.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { FirecrackerApiClient, socketAnswers } from '../../../src/hypervisors/firecracker/api-client.ts';
import { loggedRequests, readJsonLines } from './fake-firecracker-shim.ts';
import { createVmFixture, type VmFixture } from './fixtures.ts';

interface Running {
  readonly child: ChildProcess;
  readonly client: FirecrackerApiClient;
  readonly exited: Promise<[number | null, NodeJS.Signals | null]>;
  output(): string;
}

async function launch(bin: string, args: readonly string[], socketPath: string): Promise<Running> {
  const child = spawn(bin, [...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr?.on('data', (c: Buffer) => (output += c.toString()));
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  const deadline = Date.now() + 20_000;
  while (!(await socketAnswers(socketPath, 200))) {
    if (child.exitCode !== null || Date.now() > deadline) break;
    await sleep(20);
  }
  return { child, client: new FirecrackerApiClient(socketPath), exited, output: () => output };
}

describe('fake firecracker', () => {
  let fx: VmFixture;
  let socketPath: string;
  const children: ChildProcess[] = [];

  beforeEach(async () => {
    fx = await createVmFixture();
    socketPath = join(fx.spec.runDir, 'api.sock');
  });

  afterEach(async () => {
    for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await fx.cleanup();
  });

  async function start(options: Parameters<VmFixture['fakeFirecracker']>[0] = {}): Promise<Running> {
    const running = await launch(fx.fakeFirecracker(options), ['--api-sock', socketPath, '--id', 'fake-1'], socketPath);
    children.push(running.child);
    return running;
  }

  test('answers spec violations with 400 + fault_message and logs them for the test to fail', async () => {
    const { client } = await start();
    const wrongType = await client.send('PUT', '/machine-config', { vcpu_count: '2', mem_size_mib: 256 });
    assert.equal(wrongType.statusCode, 400);
    assert.match(JSON.stringify(wrongType.body), /fault_message.*vcpu_count: must be integer/);
    const unknownPath = await client.send('PUT', '/drive/base', { drive_id: 'base', is_root_device: false });
    assert.equal(unknownPath.statusCode, 400);
    assert.deepEqual(unknownPath.body, { fault_message: 'Invalid request method and/or path: PUT drive.' });
    const missing = await client.send('PUT', '/network-interfaces/eth0', { iface_id: 'eth0' });
    assert.equal(missing.statusCode, 400);
    const unknownField = await client.send('PUT', '/boot-source', { kernel_image_path: fx.spec.kernelPath, bootargs: 'x' });
    assert.equal(unknownField.statusCode, 400);

    const logged = readJsonLines(fx.violationsLog).map((v) => (v.violations as string[]).join());
    assert.equal(logged.length, 4);
    assert.match(logged[0] ?? '', /vcpu_count: must be integer/);
    assert.match(logged[1] ?? '', /no path of the document matches/);
    assert.match(logged[2] ?? '', /missing required field "host_dev_name"/);
    assert.match(logged[3] ?? '', /unknown field "bootargs"/);
  });

  test('refuses what Firecracker refuses, without calling it a spec violation', async () => {
    const { client } = await start();
    const fault = async (method: 'GET' | 'PUT', path: string, body?: unknown): Promise<string> => {
      const answer = await client.send(method, path, body);
      assert.equal(answer.statusCode, 400, `${method} ${path}`);
      return (answer.body as { fault_message: string }).fault_message;
    };
    assert.equal(
      await fault('PUT', '/actions', { action_type: 'InstanceStart' }),
      'Start microvm error: Cannot start microvm without kernel configuration.',
    );
    assert.equal(
      await fault('PUT', '/actions', { action_type: 'SendCtrlAltDel' }),
      'The requested operation is not supported before starting the microVM.',
    );
    assert.equal(
      await fault('PUT', '/boot-source', { kernel_image_path: join(fx.dir, 'nope') }),
      'Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)',
    );
    assert.equal(
      await fault('PUT', '/drives/base', {
        drive_id: 'other',
        path_on_host: fx.spec.baseDiskPath,
        is_root_device: false,
        is_read_only: true,
      }),
      'The id from the path does not match the id from the body!',
    );
    assert.match(
      await fault('PUT', '/network-interfaces/eth0', { iface_id: 'eth0', host_dev_name: 'tap0', guest_mac: 'nope' }),
      /invalid MAC/,
    );
    assert.equal(readJsonLines(fx.violationsLog).length, 0);
  });

  test('boots only once; pre-boot-only requests are refused after the start', async () => {
    const { client, output } = await start();
    await client.putGuestBootSource({ kernel_image_path: fx.spec.kernelPath, boot_args: 'console=ttyS0' });
    await client.createSyncAction({ action_type: 'InstanceStart' });
    assert.equal((await client.describeInstance()).state, 'Running');
    await assert.rejects(client.putMachineConfiguration({ vcpu_count: 1, mem_size_mib: 128 }), /not supported after starting the microVM/);
    await assert.rejects(
      client.putGuestDriveByID({ drive_id: 'late', path_on_host: fx.spec.baseDiskPath, is_root_device: false, is_read_only: true }),
      /not supported after starting the microVM/,
    );
    await assert.rejects(client.createSyncAction({ action_type: 'InstanceStart' }), /not supported after starting the microVM/);
    assert.match(output(), /Linux version .*fake/);
    assert.equal(readJsonLines(fx.violationsLog).length, 0);
  });

  test('InstanceStart needs a loadable kernel (ELF or bzImage)', async () => {
    const { client } = await start();
    const notAKernel = join(fx.dir, 'not-a-kernel');
    writeFileSync(notAKernel, 'hello');
    await client.putGuestBootSource({ kernel_image_path: notAKernel });
    await assert.rejects(client.createSyncAction({ action_type: 'InstanceStart' }), /invalid kernel image/);
  });

  test('InstanceStart takes a bzImage too', async () => {
    const { client } = await start();
    const bzImage = join(fx.dir, 'bzImage');
    const image = Buffer.alloc(0x400);
    image.write('HdrS', 0x202, 'latin1');
    writeFileSync(bzImage, image);
    await client.putGuestBootSource({ kernel_image_path: bzImage });
    await client.createSyncAction({ action_type: 'InstanceStart' });
    assert.equal((await client.describeInstance()).state, 'Running');
  });

  test('exits 0 shortly after SendCtrlAltDel', async () => {
    const { client, exited } = await start();
    await client.putGuestBootSource({ kernel_image_path: fx.spec.kernelPath });
    await client.createSyncAction({ action_type: 'InstanceStart' });
    await client.createSyncAction({ action_type: 'SendCtrlAltDel' });
    const [code, signal] = await exited;
    assert.equal(code, 0);
    assert.equal(signal, null);
    assert.deepEqual(
      loggedRequests(fx.requestLog).map((r) => `${r.method} ${r.path} ${r.status}`),
      ['PUT /boot-source 204', 'PUT /actions 204', 'PUT /actions 204'],
    );
  });

  test('will not bind over an existing socket path, nor run with an id Firecracker rejects', async () => {
    writeFileSync(socketPath, '');
    const stale = await start();
    const [code] = await stale.exited;
    assert.equal(code, 1);
    assert.match(stale.output(), /Failed to open the API socket/);

    const badId = await launch(fx.fakeFirecracker(), ['--api-sock', join(fx.dir, 'b.sock'), '--id', 'my-test.1'], join(fx.dir, 'b.sock'));
    children.push(badId.child);
    assert.notEqual((await badId.exited)[0], 0);
    assert.match(badId.output(), /Invalid instance ID: InvalidChar\('\.', 7\)/);
    assert.equal(existsSync(join(fx.dir, 'b.sock')), false);
  });
});

// Snapshots through the stand-in, without a jail: the agent's side of the identity channel is played here.
describe('fake firecracker snapshots', () => {
  let fx: VmFixture;
  const children: ChildProcess[] = [];
  const servers: Server[] = [];

  beforeEach(async () => {
    fx = await createVmFixture();
  });

  afterEach(async () => {
    for (const child of children.splice(0)) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    for (const server of servers.splice(0)) server.close();
    await fx.cleanup();
  });

  async function start(name: string, options: Parameters<VmFixture['fakeFirecracker']>[0] = {}): Promise<Running> {
    const socketPath = join(fx.spec.runDir, `${name}.sock`);
    const running = await launch(fx.fakeFirecracker(options), ['--api-sock', socketPath, '--id', name], socketPath);
    children.push(running.child);
    return running;
  }

  /** The agent's listener at `<uds_path>_52`: each connection's lines, and what to answer "ready" with. */
  function listen(path: string, answer?: string): { lines: string[][]; connected: () => number } {
    const lines: string[][] = [];
    const server = createServer((socket) => {
      const mine: string[] = [];
      lines.push(mine);
      let buffer = '';
      socket.setEncoding('utf8');
      socket.on('error', () => {});
      socket.on('data', (chunk: string) => {
        buffer += chunk;
        for (let end = buffer.indexOf('\n'); end >= 0; end = buffer.indexOf('\n')) {
          const line = buffer.slice(0, end);
          buffer = buffer.slice(end + 1);
          mine.push(line);
          if (line === 'ready' && answer !== undefined) socket.write(`${answer}\n`);
        }
      });
    });
    server.listen(path);
    servers.push(server);
    return { lines, connected: () => lines.length };
  }

  async function until(what: string, check: () => boolean): Promise<void> {
    const deadline = Date.now() + 10_000;
    while (!check()) {
      if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
      await sleep(20);
    }
  }

  const vsock = (fx: VmFixture): { guest_cid: number; uds_path: string } => ({ guest_cid: 3, uds_path: join(fx.dir, 'v.sock') });

  async function bootTemplate(running: Running): Promise<void> {
    const { client } = running;
    await client.putMachineConfiguration({ vcpu_count: 1, mem_size_mib: 64 });
    await client.putGuestBootSource({ kernel_image_path: fx.spec.kernelPath, boot_args: 'console=ttyS0 clarateach.identity=wait' });
    await client.putGuestDriveByID({ drive_id: 'layer', path_on_host: fx.spec.layerDiskPath, is_root_device: false, is_read_only: false });
    await client.putGuestNetworkInterfaceByID({ iface_id: 'eth0', host_dev_name: 'ctsnap00000000', guest_mac: '52:54:00:00:00:01' });
    await client.putGuestVsock(vsock(fx));
    await client.createSyncAction({ action_type: 'InstanceStart' });
  }

  test('a template says ready over vsock, is paused and saved; a restore on its own TAP reconnects and answers its identity', async () => {
    const channel = listen(`${vsock(fx).uds_path}_52`);
    const template = await start('template', { version: '1.12.0' });
    await bootTemplate(template);
    await until('the template guest to say ready', () => channel.lines[0]?.[0] === 'ready');

    const notPaused = await template.client.send('PUT', '/snapshot/create', {
      snapshot_path: join(fx.dir, 's'),
      mem_file_path: join(fx.dir, 'm'),
    });
    assert.match(JSON.stringify(notPaused.body), /not paused/);
    await template.client.patchVm({ state: 'Paused' });
    assert.equal((await template.client.describeInstance()).state, 'Paused');
    const state = join(fx.dir, 'snapshot.state');
    const memory = join(fx.dir, 'snapshot.mem');
    await template.client.createSnapshot({ snapshot_type: 'Full', snapshot_path: state, mem_file_path: memory });
    assert.equal(statSync(memory).size, 64 * 1024 * 1024);
    template.child.kill('SIGKILL');
    await template.exited;
    rmSync(vsock(fx).uds_path, { force: true });
    await new Promise((resolve) => servers[0]?.close(resolve));

    const seatChannel = listen(`${vsock(fx).uds_path}_52`, 'clarateach-identity/1 ip=10.0.0.2');
    const seat = await start('seat', { version: '1.12.0' });
    const configured = await seat.client.send('PUT', '/snapshot/load', { snapshot_path: state, mem_file_path: memory });
    assert.equal(configured.statusCode, 204, JSON.stringify(configured.body));
    assert.equal((await seat.client.describeInstance()).state, 'Paused', 'not resumed unless asked');
    const again = await start('again', { version: '1.12.0' });
    await again.client.putMachineConfiguration({ vcpu_count: 1, mem_size_mib: 64 });
    const afterConfig = await again.client.send('PUT', '/snapshot/load', { snapshot_path: state, mem_file_path: memory });
    assert.match(JSON.stringify(afterConfig.body), /not allowed after configuring boot-specific resources/);
    seat.child.kill('SIGKILL');
    await seat.exited;
    rmSync(vsock(fx).uds_path, { force: true });

    const restored = await start('restored', { version: '1.12.0' });
    await restored.client.loadSnapshot({
      snapshot_path: state,
      mem_backend: { backend_type: 'File', backend_path: memory },
      network_overrides: [{ iface_id: 'eth0', host_dev_name: 'ct0a000002' }],
      resume_vm: true,
    });
    await until('the restored guest to answer', () =>
      seatChannel.lines.some((l) => l[0] === 'ready' && l[1]?.startsWith('identity-ok') === true),
    );
    const loaded = readJsonLines(fx.requestLog)
      .filter((e) => e.event === 'snapshot-loaded')
      .at(-1);
    assert.deepEqual(
      (loaded?.nets as { host_dev_name: string }[]).map((n) => n.host_dev_name),
      ['ct0a000002'],
    );
    assert.deepEqual(readJsonLines(fx.violationsLog), []);
  });

  test('a version before 1.12 refuses network_overrides as an unknown field', async () => {
    const old = await start('old');
    const answer = await old.client.send('PUT', '/snapshot/load', {
      snapshot_path: join(fx.dir, 'state'),
      mem_backend: { backend_type: 'File', backend_path: join(fx.dir, 'mem') },
      network_overrides: [{ iface_id: 'eth0', host_dev_name: 'ct0a000002' }],
    });
    assert.equal(answer.statusCode, 400);
    assert.match(JSON.stringify(answer.body), /unknown field `network_overrides`/);
    assert.deepEqual(loggedRequests(fx.requestLog).at(-1)?.status, 400);
  });
});
