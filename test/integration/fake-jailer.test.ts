// The stand-in jailer on its own: it refuses what the real one refuses, and runs the exec file the
// way the real one does (same pid, empty environment, jail root as working directory, uid/gid
// dropped, `--id` and the start times first, then the arguments after `--`).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { loggedJailerArgv, writeFakeJailer } from '../support/firecracker/fake-jailer-shim.ts';

const skip = process.getuid?.() === 0 ? undefined : 'needs root (chown, mknod, setpriv)';

describe('stand-in jailer', { skip }, () => {
  let dir: string;
  let jailer: string;
  let firecracker: string;
  let base: string;
  const log = (): string => join(dir, 'jailer.log');

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fj-'));
    chmodSync(dir, 0o755);
    jailer = writeFakeJailer(dir, { log: log() });
    base = join(dir, 'base');
    mkdirSync(base);
    // An exec file that reports how it was run.
    mkdirSync(join(dir, 'bin'));
    firecracker = join(dir, 'bin', 'firecracker');
    writeFileSync(
      firecracker,
      '#!/bin/sh\nprintf "pid=%s\\nuid=%s\\ngid=%s\\ngroups=%s\\ncwd=%s\\nchroot=%s\\nenv=%s\\nargs=%s\\n" "$$" "$(id -u)" "$(id -g)" "$(id -G)" "$(pwd)" "$FAKE_FIRECRACKER_CHROOT" "$(env | sort | tr \'\\n\' \' \')" "$*"\n',
    );
    chmodSync(firecracker, 0o755);
  });

  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  function runJailer(
    args: readonly string[],
    env: NodeJS.ProcessEnv = {},
  ): { pid: number; status: number | null; stdout: string; stderr: string } {
    const result = spawnSync(jailer, args, { encoding: 'utf8', env: { ...process.env, ...env } });
    return { pid: result.pid, status: result.status, stdout: result.stdout, stderr: result.stderr };
  }

  const required = (id: string): string[] => [
    '--id',
    id,
    '--exec-file',
    firecracker,
    '--uid',
    '2000000123',
    '--gid',
    '2000000124',
    '--chroot-base-dir',
    base,
  ];

  test('runs the exec file in place of itself: no environment, jail root as cwd, uid/gid dropped, --id first', () => {
    const result = runJailer([...required('ok-1'), '--', '--api-sock', '/firecracker.sock'], { SECRET: 'must-not-leak' });
    assert.equal(result.status, 0, result.stderr);
    const out = Object.fromEntries(
      result.stdout
        .trim()
        .split('\n')
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
    );
    const chroot = join(base, 'firecracker', 'ok-1', 'root');
    assert.equal(out.pid, String(result.pid), 'the jailer process itself (exec, no fork)');
    assert.equal(out.uid, '2000000123');
    assert.equal(out.gid, '2000000124');
    assert.equal(out.groups, '2000000124', 'no supplementary groups');
    assert.equal(out.cwd, chroot);
    assert.equal(out.chroot, chroot);
    assert.doesNotMatch(out.env ?? '', /SECRET/);
    assert.match(
      out.args ?? '',
      /^--id ok-1 --start-time-us \d+ --start-time-cpu-us \d+ --parent-cpu-time-us \d+ --api-sock \/firecracker.sock$/,
    );
    assert.deepEqual(loggedJailerArgv(log()).at(-1), [...required('ok-1'), '--', '--api-sock', '/firecracker.sock']);
    assert.ok(existsSync(join(chroot, 'firecracker')), 'exec file copied into the jail');
    assert.ok(existsSync(join(chroot, 'dev', 'kvm')) && existsSync(join(chroot, 'dev', 'net', 'tun')));
  });

  test('--new-pid-ns: writes the pid of the process running the exec file to <exec_file_name>.pid and exits', async () => {
    const result = runJailer([...required('ok-2'), '--new-pid-ns']);
    assert.equal(result.status, 0, result.stderr);
    const pidFile = join(base, 'firecracker', 'ok-2', 'root', 'firecracker.pid');
    for (let i = 0; i < 100 && !readFileSync(pidFile, 'utf8').trim(); i++) await new Promise((r) => setTimeout(r, 20));
    assert.match(readFileSync(pidFile, 'utf8').trim(), /^\d+$/);
  });

  const refusals: [string, () => string[], RegExp][] = [
    ['an unknown argument', () => [...required('r1'), '--daemon'], /Found argument '--daemon'/],
    ['a --name=value argument', () => ['--id=r2', '--exec-file', firecracker, '--uid', '1', '--gid', '1'], /Found argument '--id=r2'/],
    ['a missing --uid', () => ['--id', 'r3', '--exec-file', firecracker, '--gid', '1'], /Missing the required argument '--uid'/],
    ['a repeated --id', () => [...required('r4'), '--id', 'r4b'], /'--id' was provided more than once/],
    ['an invalid id', () => required('a.b'), /Invalid instance ID: a.b/],
    [
      'a uid that is not a number',
      () => ['--id', 'r5', '--exec-file', firecracker, '--uid', 'root', '--gid', '1', '--chroot-base-dir', base],
      /Invalid uid: root/,
    ],
    ['a cgroup without a value', () => [...required('r6'), '--cgroup', 'memory.max'], /Invalid cgroup format: memory.max/],
    ['a cgroup file without a controller', () => [...required('r7'), '--cgroup', 'cpu=1'], /Invalid cgroup file: cpu/],
    ['a parent cgroup with ..', () => [...required('r8'), '--parent-cgroup', 'a/../b'], /Invalid parent cgroup path/],
    ['cgroup version 3', () => [...required('r9'), '--cgroup-version', '3'], /Invalid cgroup version: 3/],
    [
      'a missing chroot base',
      () => ['--id', 'r10', '--exec-file', firecracker, '--uid', '1', '--gid', '1', '--chroot-base-dir', join(dir, 'nope')],
      /canonicalize/,
    ],
    ['an unknown resource limit', () => [...required('r11'), '--resource-limit', 'cpu=1'], /Invalid resource limit argument: cpu/],
    ['a netns that does not exist', () => [...required('r12'), '--netns', join(dir, 'no-netns')], /No such file/],
  ];
  for (const [what, args, message] of refusals) {
    test(`refuses ${what}`, () => {
      const result = runJailer(args());
      assert.equal(result.status, 1);
      assert.match(result.stderr, message);
      assert.equal(result.stdout, '', 'nothing run');
    });
  }

  test('refuses an exec file whose name does not contain "firecracker"', () => {
    const other = join(dir, 'bin', 'vmm');
    writeFileSync(other, '#!/bin/sh\n');
    chmodSync(other, 0o755);
    const result = runJailer(['--id', 'r13', '--exec-file', other, '--uid', '1', '--gid', '1', '--chroot-base-dir', base]);
    assert.equal(result.status, 1);
    assert.match(result.stderr, /must contain "firecracker"/);
  });
});
