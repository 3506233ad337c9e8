// The Firecracker driver through the jailer, against the stand-in jailer (test/support/firecracker/fake-jailer.ts:
// checks its argv as docs/jailer.md has it, builds the jail, drops to the VM's uid/gid for real)
// and the stand-in Firecracker (every API request checked against the OpenAPI document, every path
// resolved inside the jail). Needs root: chown, mknod, setpriv, cgroups.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { after, afterEach, before, beforeEach, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  cgroupPathsOf,
  listVmCgroups,
  openVmCgroup,
  parseMountinfo,
  readProcessCgroups,
  vmCgroupSettings,
  type CgroupPlacement,
} from '../../src/host/cgroups/index.ts';
import { createFakeCgroupV2 } from '../support/cgroups/fake-cgroupfs.ts';
import { realCgroupSkipReason, testCgroupArea, type TestCgroupArea } from '../support/cgroups/test-cgroups.ts';
import { processStartTime } from '../../src/host/process.ts';
import { bootCalls } from '../../src/hypervisors/firecracker/boot-requests.ts';
import { firecrackerInstanceId } from '../../src/hypervisors/firecracker/command.ts';
import { createFirecrackerDriver, FirecrackerStartError, type FirecrackerDriverOptions } from '../../src/hypervisors/firecracker/index.ts';
import { JAIL_CACHE_DIR, jailedSpec } from '../../src/hypervisors/firecracker/jail.ts';
import { loggedPids, loggedRequests, readJsonLines } from '../support/firecracker/fake-firecracker-shim.ts';
import { loggedJailerArgv } from '../support/firecracker/fake-jailer-shim.ts';
import { createVmFixture, type VmFixture } from '../support/firecracker/fixtures.ts';
import { capturingLogger } from '../support/logs.ts';

const SOCKET_TIMEOUT_MS = 30_000;
const MIB = 1024 * 1024;
const skip = await realCgroupSkipReason();
/** A uid range of this test run's own: runs in parallel do not collide. */
const UID_BASE = 2_000_000_000 + (process.pid % 1000) * 65_536;
/** The fixture's MAC is 06:00:0a:00:00:02: slot 2. */
const VM_UID = UID_BASE + 2;
const ID = firecrackerInstanceId('my-test.1');

function statusIds(pid: number): { uid: string; gid: string; groups: string } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string): string => (new RegExp(`^${name}:[ \\t]*(.*)$`, 'm').exec(status)?.[1] ?? '').trim().replace(/\s+/g, ' ');
  return { uid: field('Uid'), gid: field('Gid'), groups: field('Groups') };
}

const major = (rdev: number): number => Math.floor(rdev / 256) & 0xfff;
const minor = (rdev: number): number => (rdev & 0xff) | ((rdev >> 12) & 0xfff00);

describe('Firecracker driver through the jailer', { skip }, () => {
  let fx: VmFixture;
  let area: TestCgroupArea;
  let chrootBase: string;
  const logs: string[] = [];

  before(async () => {
    area = await testCgroupArea('fcjail');
  });

  after(async () => {
    await area?.cleanup();
  });

  beforeEach(async () => {
    fx = await createVmFixture('my-test.1', { jailed: true });
    chrootBase = join(fx.dir, 'jail');
    mkdirSync(chrootBase);
    logs.length = 0;
  });

  afterEach(async () => {
    await fx.cleanup();
  });

  function driver(
    options: Partial<FirecrackerDriverOptions> & { firecrackerBin: string; jailerBin: string },
  ): ReturnType<typeof createFirecrackerDriver> {
    return createFirecrackerDriver({
      apiSocketTimeoutMs: SOCKET_TIMEOUT_MS,
      log: capturingLogger(logs),
      cgroup: area.placement,
      cgroupOverheadMb: 32,
      ...options,
      jail: { chrootBaseDir: chrootBase, uidBase: UID_BASE, ...options.jail },
    });
  }

  /** The --cgroup arguments for this host (v1: with memsw where the kernel has it). */
  function expectedCgroupArgs(): string[] {
    const settings = vmCgroupSettings(area.layout.version, { vcpus: 2, memoryMb: 512, overheadMb: 32 });
    const args: string[] = [];
    for (const s of settings) {
      if (s.optional && !existsSync(join(area.layout.mounts[s.controller], area.rootRelativeParent, s.file))) continue;
      args.push('--cgroup', `${s.file}=${s.value}`);
    }
    return args;
  }

  test('start: jailer command line, jail layout, unprivileged VMM, jail-relative API paths, cgroup limits; stop removes jail and cgroup', async () => {
    // Through a symlink, as /usr/local/bin/firecracker often is: the jailer names the jail after the real file.
    const realFirecracker = fx.fakeFirecracker();
    const link = join(fx.dir, 'current-firecracker');
    symlinkSync(realFirecracker, link);
    const netns = `/proc/${process.pid}/ns/net`;
    const d = await driver({ firecrackerBin: link, jailerBin: fx.fakeJailer(), jail: { netns } });
    const proc = await d.start(fx.spec);

    // The exact command line (docs/jailer.md): everything after `--` goes to Firecracker.
    assert.deepEqual(loggedJailerArgv(fx.jailerLog), [
      [
        '--id',
        ID,
        '--exec-file',
        realFirecracker,
        '--uid',
        String(VM_UID),
        '--gid',
        String(VM_UID),
        '--chroot-base-dir',
        chrootBase,
        '--cgroup-version',
        String(area.layout.version),
        '--parent-cgroup',
        area.rootRelativeParent,
        ...expectedCgroupArgs(),
        '--netns',
        netns,
        '--',
        '--api-sock',
        '/firecracker.sock',
      ],
    ]);

    // The VMM: the jailer's own process (exec), running as the VM's uid/gid, no other groups.
    assert.deepEqual(loggedPids(fx.requestLog), [proc.pid]);
    assert.equal(d.isAlive(proc), true);
    const ids = statusIds(proc.pid);
    assert.deepEqual(ids, { uid: Array(4).fill(VM_UID).join(' '), gid: Array(4).fill(VM_UID).join(' '), groups: '' });
    const [listening] = readJsonLines(fx.requestLog).filter((e) => e.event === 'listening');
    const jailDir = join(chrootBase, 'firecracker', ID);
    const chrootDir = join(jailDir, 'root');
    assert.equal(listening?.chroot, chrootDir);
    const fcArgs = (listening?.args as string[]).map((a) => (/^\d+$/.test(a) ? 'N' : a));
    assert.deepEqual(fcArgs, [
      '--id',
      ID,
      '--start-time-us',
      'N',
      '--start-time-cpu-us',
      'N',
      '--parent-cpu-time-us',
      'N',
      '--api-sock',
      '/firecracker.sock',
    ]);
    assert.equal(readlinkSync(`/proc/${proc.pid}/ns/net`), readlinkSync(netns), 'joined the given network namespace');
    assert.match(readFileSync(`/proc/${proc.pid}/limits`, 'utf8'), /Max open files\s+2048\s+2048/, "the jailer's default no-file limit");

    // The jail.
    const root = statSync(chrootDir);
    assert.equal(root.uid, VM_UID);
    assert.equal(root.mode & 0o777, 0o700);
    for (const [name, source] of [
      ['vmlinux', fx.spec.kernelPath],
      ['initrd.img', fx.spec.initrdPath],
      ['rootfs.ext4', fx.spec.baseDiskPath],
    ] as const) {
      const inJail = statSync(join(chrootDir, name));
      assert.equal(inJail.ino, statSync(source).ino, `${name} hard-linked`);
      assert.equal(inJail.uid, 0, `${name} stays root's`);
    }
    const layer = statSync(join(chrootDir, 'layer.ext4'));
    assert.equal(layer.ino, statSync(fx.spec.layerDiskPath).ino, 'the layer hard-linked');
    assert.equal(layer.uid, VM_UID);
    assert.equal(layer.gid, VM_UID);
    assert.equal(layer.mode & 0o777, 0o600);
    for (const [device, maj, min] of [
      ['dev/kvm', 10, 232],
      ['dev/net/tun', 10, 200],
    ] as const) {
      const st = lstatSync(join(chrootDir, device));
      assert.ok(st.isCharacterDevice(), device);
      assert.deepEqual([major(st.rdev), minor(st.rdev), st.uid], [maj, min, VM_UID], device);
    }
    assert.ok(statSync(join(chrootDir, 'run')).isDirectory());
    assert.ok(statSync(join(chrootDir, 'firecracker')).isFile(), 'the exec file copied in');
    assert.ok(lstatSync(join(chrootDir, 'firecracker.sock')).isSocket());

    // Every API request validated, with the paths the jailed VMM sees.
    const requests = loggedRequests(fx.requestLog);
    assert.deepEqual(
      requests.map((r) => ({ method: r.method, path: r.path, body: r.body, status: r.status })),
      bootCalls(jailedSpec(fx.spec)).map((c) => ({ method: c.method, path: c.path, body: c.body, status: 204 })),
    );
    assert.deepEqual(
      requests
        .filter((r) => r.path === '/boot-source' || r.path.startsWith('/drives/'))
        .map((r) => JSON.stringify(r.body).match(/"(kernel_image_path|initrd_path|path_on_host)":"[^"]*"/g)),
      [
        ['"kernel_image_path":"/vmlinux"', '"initrd_path":"/initrd.img"'],
        ['"path_on_host":"/rootfs.ext4"'],
        ['"path_on_host":"/layer.ext4"'],
      ],
    );
    assert.deepEqual(readJsonLines(fx.violationsLog), []);

    // The cgroup the jailer set up, with the VMM in it.
    const cgroup = await openVmCgroup(ID, area.placement);
    assert.deepEqual(cgroupPathsOf(await readProcessCgroups(proc.pid), area.layout), cgroup.paths);
    const read = (c: 'cpu' | 'memory', file: string): string => readFileSync(join(cgroup.dirs[c], file), 'utf8').trim();
    if (area.layout.version === 1) {
      assert.equal(read('cpu', 'cpu.cfs_quota_us'), '200000');
      assert.equal(read('memory', 'memory.limit_in_bytes'), String(544 * MIB));
    } else {
      assert.equal(read('cpu', 'cpu.max'), '200000 100000');
      assert.equal(read('memory', 'memory.max'), String(544 * MIB));
    }

    await d.stop(fx.spec, proc, 10_000);
    assert.equal(d.isAlive(proc), false);
    assert.equal(existsSync(jailDir), false, 'jail removed');
    assert.equal(await cgroup.exists(), false, 'cgroup removed');
    assert.deepEqual(await listVmCgroups(area.placement), []);
    assert.ok(existsSync(fx.spec.layerDiskPath), "the VM's layer itself is kept");
    assert.ok(
      readJsonLines(fx.requestLog).some((e) => e.event === 'exit' && e.code === 0),
      'shut down gracefully (Ctrl-Alt-Del)',
    );
  });

  test('--new-pid-ns: the VMM pid comes from the pid file the jailer writes; stop works on it', async () => {
    const d = await driver({ firecrackerBin: fx.fakeFirecracker(), jailerBin: fx.fakeJailer(), jail: { newPidNs: true } });
    const proc = await d.start(fx.spec);
    const [argv] = loggedJailerArgv(fx.jailerLog);
    assert.ok(argv && argv.indexOf('--new-pid-ns') >= 0 && argv.indexOf('--new-pid-ns') < argv.indexOf('--'));
    const chrootDir = join(chrootBase, 'firecracker', ID, 'root');
    assert.equal(readFileSync(join(chrootDir, 'firecracker.pid'), 'utf8').trim(), String(proc.pid));
    assert.deepEqual(loggedPids(fx.requestLog), [proc.pid], 'the pid of the VMM itself');
    assert.equal(statusIds(proc.pid).uid.split(' ')[0], String(VM_UID));
    assert.equal(await (await openVmCgroup(ID, area.placement)).contains(proc.pid), true, 'inherited the cgroup');
    await d.stop(fx.spec, proc, 10_000);
    assert.equal(processStartTime(proc.pid), undefined);
    assert.equal(existsSync(join(chrootBase, 'firecracker', ID)), false);
    assert.deepEqual(await listVmCgroups(area.placement), []);
  });

  test('cgroup v2 (fake tree): --cgroup-version 2, cpu.max / memory.max / memory.swap.max written by the jailer', async () => {
    const fake = createFakeCgroupV2(join(fx.dir, 'cgroupfs'));
    // clarateach/ as the kernel shows it once cpu and memory are enabled at the root: with swap accounting.
    writeFileSync(join(fake.root, 'cgroup.subtree_control'), 'cpu memory\n');
    fake.kernelMkdir(join(fake.root, 'clarateach'));
    const placement: CgroupPlacement = { detect: { root: fake.root, mountinfoPath: fake.mountinfoPath } };
    const d = await driver({
      firecrackerBin: fx.fakeFirecracker(),
      jailerBin: fx.fakeJailer({ procMounts: fake.procMountsPath }),
      cgroup: placement,
    });
    const proc = await d.start(fx.spec);
    const [argv] = loggedJailerArgv(fx.jailerLog);
    const memory = String(544 * MIB);
    assert.deepEqual(argv?.slice(argv.indexOf('--cgroup-version'), argv.indexOf('--')), [
      '--cgroup-version',
      '2',
      '--parent-cgroup',
      'clarateach',
      '--cgroup',
      'cpu.max=200000 100000',
      '--cgroup',
      `memory.max=${memory}`,
      '--cgroup',
      'memory.swap.max=0',
    ]);
    const leaf = join(fake.root, 'clarateach', ID);
    assert.equal(fake.read(join(leaf, 'cpu.max')), '200000 100000\n');
    assert.equal(fake.read(join(leaf, 'memory.max')), `${memory}\n`);
    assert.equal(fake.read(join(leaf, 'memory.swap.max')), '0\n');
    assert.equal(fake.read(join(leaf, 'cgroup.procs')), `${proc.pid}\n`, 'the jailer put itself (now the VMM) in');
    assert.match(fake.read(join(fake.root, 'clarateach', 'cgroup.subtree_control')) ?? '', /memory/);
    assert.deepEqual(readJsonLines(fx.violationsLog), []);
    fake.kernelEmpty(leaf); // what the kernel's cgroupfs always looks like to rmdir
    await d.stop(fx.spec, proc, 10_000);
    assert.equal(existsSync(leaf), false, 'cgroup removed');
    assert.equal(existsSync(join(chrootBase, 'firecracker', ID)), false, 'jail removed');
  });

  test('a start that fails leaves no process, no jail and no cgroup', async () => {
    const d = await driver({
      firecrackerBin: fx.fakeFirecracker({ failInstanceStart: 'Kvm error: Permission denied (os error 13)' }),
      jailerBin: fx.fakeJailer(),
    });
    await assert.rejects(d.start(fx.spec), (error: unknown) => {
      assert.ok(error instanceof FirecrackerStartError);
      assert.match(error.faultMessage ?? '', /Permission denied/);
      return true;
    });
    const [pid] = loggedPids(fx.requestLog);
    assert.ok(pid !== undefined);
    assert.equal(processStartTime(pid), undefined, 'the VMM was killed');
    assert.equal(existsSync(join(chrootBase, 'firecracker', ID)), false);
    assert.deepEqual(await listVmCgroups(area.placement), []);
    assert.deepEqual(readJsonLines(fx.violationsLog), []);
  });

  test('a jailer that refuses its arguments: rejects with its message on the console, leaves nothing', async () => {
    const d = await driver({
      firecrackerBin: fx.fakeFirecracker(),
      jailerBin: fx.fakeJailer(),
      jail: { netns: join(fx.dir, 'no-such-netns') },
    });
    await assert.rejects(d.start(fx.spec), (error: unknown) => {
      assert.ok(error instanceof FirecrackerStartError);
      assert.match(error.message, /the jailer exited with code 1 before its API socket came up/);
      assert.match(error.message, /--- console ---\n.*Failed to open .*no-such-netns/);
      return true;
    });
    assert.equal(existsSync(join(chrootBase, 'firecracker', ID)), false, 'jail removed');
    assert.deepEqual(await listVmCgroups(area.placement), []);
    assert.deepEqual(loggedPids(fx.requestLog), [], 'firecracker never ran');
  });

  test('an exec file the jailer would refuse is refused before anything is set up', async () => {
    const notFirecracker = join(fx.dir, 'vmm');
    writeFileSync(notFirecracker, '#!/bin/sh\nexit 0\n');
    chmodSync(notFirecracker, 0o755);
    await assert.rejects(
      (await driver({ firecrackerBin: notFirecracker, jailerBin: fx.fakeJailer() })).start(fx.spec),
      /contains "firecracker"/,
    );
    assert.deepEqual(loggedJailerArgv(fx.jailerLog), []);
  });

  test('refuses a uid that a live process already runs as', async () => {
    const sleeper = spawn('setpriv', [`--reuid=${VM_UID}`, `--regid=${VM_UID}`, '--clear-groups', '--', 'sleep', '30'], {
      stdio: 'ignore',
    });
    try {
      assert.ok(sleeper.pid !== undefined);
      // setpriv runs as root until it has switched users.
      for (let waited = 0; !statusIds(sleeper.pid).uid.startsWith(String(VM_UID)); waited += 20) {
        assert.ok(waited < 10_000, 'setpriv switched to the VM uid');
        await sleep(20);
      }
      const d = await driver({ firecrackerBin: fx.fakeFirecracker(), jailerBin: fx.fakeJailer() });
      await assert.rejects(d.start(fx.spec), new RegExp(`uid ${VM_UID} of this VM's jail is in use by pid ${sleeper.pid}`));
      assert.equal(existsSync(join(chrootBase, 'firecracker', ID)), false);
      assert.deepEqual(loggedJailerArgv(fx.jailerLog), [], 'the jailer never ran');
    } finally {
      const exited = once(sleeper, 'exit');
      sleeper.kill('SIGKILL');
      await exited;
    }
  });

  test('reconcile: a jailed VMM that no VM owns is found in its cgroup and killed; its jail and cgroup go, a kept VM stays', async () => {
    const d = await driver({ firecrackerBin: fx.fakeFirecracker(), jailerBin: fx.fakeJailer() });
    assert.ok(d.reclaim);
    // The agent died before it recorded this pid: only the cgroup and the jail lead to it.
    const proc = await d.start(fx.spec);
    const jailDir = join(chrootBase, 'firecracker', ID);
    const strayJail = join(chrootBase, 'firecracker', 'gone-vm-1');
    mkdirSync(join(strayJail, 'root'), { recursive: true });
    const notOurs = join(chrootBase, 'other-vmm', 'x-1');
    mkdirSync(notOurs, { recursive: true });

    await d.reclaim(new Set(['my-test.1']));
    assert.equal(d.isAlive(proc), true, 'a kept VM keeps running');
    assert.ok(existsSync(jailDir), 'and keeps its jail');
    assert.deepEqual(await listVmCgroups(area.placement), [ID]);
    assert.equal(existsSync(strayJail), false, 'a jail without a VM is removed');

    await d.reclaim(new Set());
    assert.equal(processStartTime(proc.pid), undefined, 'the unowned VMM was killed');
    assert.equal(existsSync(jailDir), false, 'its jail removed');
    assert.deepEqual(await listVmCgroups(area.placement), [], 'its cgroup removed');
    assert.ok(existsSync(notOurs), 'a directory the jailer would not have made is left alone');
    assert.ok(
      logs.some((l) => l.includes(`firecracker ${ID}: removed`)),
      logs.join('\n'),
    );
  });

  test('a start over a jailed VMM nobody recorded (the agent died during a start) ends that VMM and starts', async () => {
    const d = await driver({ firecrackerBin: fx.fakeFirecracker(), jailerBin: fx.fakeJailer() });
    const orphan = await d.start(fx.spec);
    const proc = await d.start(fx.spec);
    assert.equal(processStartTime(orphan.pid), undefined, 'the unrecorded VMM was killed');
    assert.equal(d.isAlive(proc), true);
    assert.deepEqual(await listVmCgroups(area.placement), [ID]);
    await d.stop(fx.spec, proc, 5_000);
  });

  test('chroot base on another filesystem: images copied once into its cache, the layer bind-mounted', async () => {
    const shmBase = await mkdtemp('/dev/shm/fcj-');
    chmodSync(shmBase, 0o755);
    try {
      const d = await driver({ firecrackerBin: fx.fakeFirecracker(), jailerBin: fx.fakeJailer(), jail: { chrootBaseDir: shmBase } });
      const proc = await d.start(fx.spec);
      const chrootDir = join(shmBase, 'firecracker', ID, 'root');
      const kernel = statSync(join(chrootDir, 'vmlinux'));
      assert.notEqual(kernel.ino, statSync(fx.spec.kernelPath).ino, 'a copy');
      assert.equal(kernel.nlink, 2, 'hard-linked from the cache');
      const layerMounted = parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8')).some(
        (m) => m.mountPoint === join(chrootDir, 'layer.ext4'),
      );
      assert.ok(layerMounted, 'layer bind-mounted');
      assert.equal(statSync(join(chrootDir, 'layer.ext4')).ino, statSync(fx.spec.layerDiskPath).ino, 'the very same file');
      assert.deepEqual(readJsonLines(fx.violationsLog), []);
      await d.stop(fx.spec, proc, 10_000);
      assert.equal(existsSync(join(shmBase, 'firecracker', ID)), false, 'unmounted and removed');
      assert.ok(existsSync(fx.spec.layerDiskPath));

      // A second start reuses the cached copies.
      const cached = statSync(join(shmBase, JAIL_CACHE_DIR)).isDirectory();
      assert.ok(cached);
      const again = await d.start(fx.spec);
      assert.equal(statSync(join(chrootDir, 'vmlinux')).ino, kernel.ino, 'the same cached copy');
      await d.stop(fx.spec, again, 10_000);
    } finally {
      for (const m of parseMountinfo(readFileSync('/proc/self/mountinfo', 'utf8'))) {
        if (m.mountPoint.startsWith(`${shmBase}/`)) spawn('umount', ['--lazy', m.mountPoint]);
      }
      await rm(shmBase, { recursive: true, force: true });
    }
  });
});
