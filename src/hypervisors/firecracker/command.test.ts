// The VMM's command line, plain and through the jailer, and the Firecracker --id mapping (pure).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { API_SOCKET_NAME, buildVmmCommand, firecrackerInstanceId, MAX_SOCKET_PATH_BYTES, type JailerOptions } from './command.ts';

/** utils::validators::validate_instance_id of Firecracker and the jailer. */
const FIRECRACKER_ID = /^[A-Za-z0-9-]{1,64}$/;

describe('firecrackerInstanceId', () => {
  test('keeps ids Firecracker accepts', () => {
    assert.equal(firecrackerInstanceId('seat-12'), 'seat-12');
    assert.equal(firecrackerInstanceId('a'.repeat(64)), 'a'.repeat(64));
  });

  test('maps the lifecycle ids (workshop.seat) to valid, readable, distinct ids', () => {
    const id = firecrackerInstanceId('my-test.1');
    assert.match(id, /^my-test-1-[0-9a-f]{8}$/);
    assert.equal(firecrackerInstanceId('my-test.1'), id, 'deterministic: an agent restart finds the same id');
    assert.notEqual(firecrackerInstanceId('a_1.2'), firecrackerInstanceId('a-1.2'));
    assert.notEqual(firecrackerInstanceId('a.12'), firecrackerInstanceId('a.1.2'));
  });

  test('maxLength shortens (readable prefix + hash) and stays distinct', () => {
    assert.equal(firecrackerInstanceId('seat-12', 9), 'seat-12');
    const a = firecrackerInstanceId('workshop-with-a-long-name-1', 20);
    assert.match(a, /^workshop-wi-[0-9a-f]{8}$/);
    assert.notEqual(a, firecrackerInstanceId('workshop-with-a-long-name-2', 20));
    assert.throws(() => firecrackerInstanceId('a', 8), /maxLength/);
  });

  test('always yields 1..64 alphanumerics and hyphens', () => {
    for (const input of ['my-test.1', 'x'.repeat(200) + '.3', '...', '', 'ünïcode.5', '-lead.trail-', 'a b/c\\d.1']) {
      assert.match(firecrackerInstanceId(input), FIRECRACKER_ID, JSON.stringify(input));
    }
  });
});

describe('buildVmmCommand without the jailer', () => {
  test('runs firecracker with its API socket in the run directory and a valid --id', () => {
    const command = buildVmmCommand({ firecrackerBin: 'firecracker', vmId: 'my-test.1', runDir: '/var/lib/ct/vms/my-test.1' });
    const id = firecrackerInstanceId('my-test.1');
    assert.deepEqual(command, {
      file: 'firecracker',
      args: ['--api-sock', `/var/lib/ct/vms/my-test.1/${API_SOCKET_NAME}`, '--id', id],
      instanceId: id,
      apiSocketPath: `/var/lib/ct/vms/my-test.1/${API_SOCKET_NAME}`,
    });
  });

  test('needs an absolute run directory', () => {
    assert.throws(() => buildVmmCommand({ firecrackerBin: 'firecracker', vmId: 'a', runDir: 'run/a' }), /absolute/);
  });
});

describe('buildVmmCommand with the jailer', () => {
  const jailer: JailerOptions = {
    jailerBin: '/usr/local/bin/jailer',
    uid: 10_001,
    gid: 10_000,
    chrootBaseDir: '/srv/jailer',
    cgroupVersion: 2,
    parentCgroup: 'clarateach',
    cgroups: { 'cpu.max': '200000 100000', 'memory.max': '2147483648' },
    netns: '/var/run/netns/clarateach',
    resourceLimits: { fsize: 20_000_000_000, noFile: 2048 },
  };

  test('produces the jailer command line of docs/jailer.md', () => {
    const command = buildVmmCommand({
      firecrackerBin: '/usr/local/bin/firecracker',
      vmId: 'my-test.1',
      runDir: '/var/lib/ct/vms/my-test.1',
      jailer,
    });
    const id = firecrackerInstanceId('my-test.1');
    const chrootDir = `/srv/jailer/firecracker/${id}/root`;
    assert.deepEqual(command, {
      file: '/usr/local/bin/jailer',
      args: [
        '--id',
        id,
        '--exec-file',
        '/usr/local/bin/firecracker',
        '--uid',
        '10001',
        '--gid',
        '10000',
        '--chroot-base-dir',
        '/srv/jailer',
        '--cgroup-version',
        '2',
        '--parent-cgroup',
        'clarateach',
        '--cgroup',
        'cpu.max=200000 100000',
        '--cgroup',
        'memory.max=2147483648',
        '--netns',
        '/var/run/netns/clarateach',
        '--resource-limit',
        'fsize=20000000000',
        '--resource-limit',
        'no-file=2048',
        '--',
        '--api-sock',
        '/firecracker.sock',
      ],
      instanceId: id,
      apiSocketPath: `${chrootDir}/firecracker.sock`,
      jail: { chrootBaseDir: '/srv/jailer', jailDir: `/srv/jailer/firecracker/${id}`, chrootDir, apiSocketInJail: '/firecracker.sock' },
    });
    assert.ok(!command.args.includes('--daemonize'), 'the console must stay on stdout');
    assert.equal(command.args.filter((a) => a === '--id').length, 1, 'the jailer passes --id to firecracker itself');
  });

  test('defaults the chroot base and records the pid file with a new pid namespace', () => {
    const command = buildVmmCommand({
      firecrackerBin: '/opt/fc/firecracker-v1.8.0-x86_64',
      vmId: 'seat-3',
      runDir: '/run/ct/seat-3',
      jailer: { jailerBin: '/opt/fc/jailer', uid: 0, gid: 0, newPidNs: true },
    });
    assert.deepEqual(command.args, [
      '--id',
      'seat-3',
      '--exec-file',
      '/opt/fc/firecracker-v1.8.0-x86_64',
      '--uid',
      '0',
      '--gid',
      '0',
      '--chroot-base-dir',
      '/srv/jailer',
      '--new-pid-ns',
      '--',
      '--api-sock',
      '/firecracker.sock',
    ]);
    assert.deepEqual(command.jail, {
      chrootBaseDir: '/srv/jailer',
      jailDir: '/srv/jailer/firecracker-v1.8.0-x86_64/seat-3',
      chrootDir: '/srv/jailer/firecracker-v1.8.0-x86_64/seat-3/root',
      apiSocketInJail: '/firecracker.sock',
      pidFile: '/srv/jailer/firecracker-v1.8.0-x86_64/seat-3/root/firecracker-v1.8.0-x86_64.pid',
    });
  });

  test('keeps the jail id short enough for the API socket path (sun_path: 107 bytes)', () => {
    const longId = `${'w'.repeat(40)}.${'s'.repeat(3)}`;
    const command = buildVmmCommand({ firecrackerBin: '/usr/local/bin/firecracker', vmId: longId, runDir: '/run/x', jailer });
    assert.ok(Buffer.byteLength(command.apiSocketPath) <= MAX_SOCKET_PATH_BYTES, command.apiSocketPath);
    assert.match(command.instanceId, FIRECRACKER_ID);
    assert.match(command.instanceId, /^w{40}-s{3}-[0-9a-f]{8}$/);
    assert.equal(command.args[command.args.indexOf('--id') + 1], command.instanceId);
    assert.equal(
      buildVmmCommand({ firecrackerBin: '/usr/local/bin/firecracker', vmId: longId, runDir: '/run/x', jailer }).instanceId,
      command.instanceId,
      'deterministic',
    );
    // A 64-character valid id is shortened too when the base directory leaves no room for it.
    const id64 = 'a'.repeat(64);
    const long = buildVmmCommand({ firecrackerBin: '/usr/local/bin/firecracker', vmId: id64, runDir: '/run/x', jailer });
    assert.ok(long.instanceId.length < 64 && Buffer.byteLength(long.apiSocketPath) <= MAX_SOCKET_PATH_BYTES);
    assert.equal(buildVmmCommand({ firecrackerBin: 'firecracker', vmId: id64, runDir: '/run/x' }).instanceId, id64, 'no jail: unchanged');
    assert.throws(
      () =>
        buildVmmCommand({
          firecrackerBin: '/usr/local/bin/firecracker',
          vmId: 'a',
          runDir: '/run/x',
          jailer: { ...jailer, chrootBaseDir: `/${'d'.repeat(80)}` },
        }),
      /too long/,
    );
  });

  test('refuses what the jailer would refuse', () => {
    const base = { vmId: 'a', runDir: '/run/a' };
    const ok = { jailerBin: '/usr/bin/jailer', uid: 1, gid: 1 };
    assert.throws(() => buildVmmCommand({ ...base, firecrackerBin: 'firecracker', jailer: ok }), /absolute firecracker path/);
    assert.throws(() => buildVmmCommand({ ...base, firecrackerBin: '/usr/bin/vmm', jailer: ok }), /contains "firecracker"/);
    const fc = { ...base, firecrackerBin: '/usr/bin/firecracker' };
    assert.throws(() => buildVmmCommand({ ...fc, jailer: { ...ok, uid: -1 } }), /uid/);
    assert.throws(() => buildVmmCommand({ ...fc, jailer: { ...ok, gid: 1.5 } }), /gid/);
    assert.throws(() => buildVmmCommand({ ...fc, jailer: { ...ok, jailerBin: 'jailer' } }), /jailerBin/);
    assert.throws(() => buildVmmCommand({ ...fc, jailer: { ...ok, chrootBaseDir: 'jail' } }), /chrootBaseDir/);
    assert.throws(() => buildVmmCommand({ ...fc, jailer: { ...ok, netns: 'ns1' } }), /netns/);
    assert.throws(() => buildVmmCommand({ ...fc, jailer: { ...ok, parentCgroup: '../up' } }), /parentCgroup/);
    assert.throws(() => buildVmmCommand({ ...fc, jailer: { ...ok, cgroups: { cpu: '1' } } }), /cgroup file/);
    assert.throws(() => buildVmmCommand({ ...fc, jailer: { ...ok, cgroups: { 'cpu.max': 'a\nb' } } }), /value/);
    assert.throws(() => buildVmmCommand({ ...fc, jailer: { ...ok, resourceLimits: { noFile: -1 } } }), /no-file/);
  });
});
