// Cgroup layout detection against made-up mountinfo and /proc/PID/cgroup texts: v1, v2 and hybrid hosts.
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { cgroupPathsOf, detectCgroupLayout, parseMountinfo, parseProcCgroup } from './detect.ts';
import { CgroupError } from './errors.ts';

/** mountinfo lines as this kind of host shows them (hybrid: v1 controllers + an empty cgroup2). */
function mountinfo(root: string, v2Unified: 'none' | 'hybrid' | 'unified'): string {
  const lines = ['22 1 253:0 / / rw,relatime - ext4 /dev/vda rw', `31 22 0:28 / ${root} rw,relatime - tmpfs tmpfs rw,mode=755`];
  if (v2Unified === 'unified') {
    lines[1] = `31 22 0:28 / ${root} rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot`;
    return `${lines.join('\n')}\n`;
  }
  lines.push(
    `32 31 0:29 / ${root}/cpu,cpuacct rw,relatime shared:10 - cgroup cgroup rw,cpu,cpuacct`,
    `35 31 0:32 / ${root}/memory rw,relatime - cgroup cgroup rw,memory`,
    `40 31 0:37 / ${root}/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd`,
  );
  if (v2Unified === 'hybrid') lines.push(`41 31 0:38 / ${root}/unified rw,relatime - cgroup2 cgroup2 rw`);
  return `${lines.join('\n')}\n`;
}

describe('parseMountinfo', () => {
  test('reads mount point, type, source and super options, skipping optional fields', () => {
    const [entry] = parseMountinfo(
      '36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue\n',
    );
    assert.deepEqual(entry, {
      root: '/mnt1',
      mountPoint: '/mnt/with space',
      fsType: 'ext3',
      source: '/dev/root',
      superOptions: ['rw', 'errors=continue'],
    });
  });

  test('skips malformed lines', () => {
    assert.deepEqual(parseMountinfo('garbage\n\n1 2 3\n'), []);
  });
});

describe('detectCgroupLayout', () => {
  let dir: string;
  let n = 0;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'cg-detect-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  function fakeHost(
    kind: 'none' | 'hybrid' | 'unified',
    controllers = 'cpuset cpu io memory pids',
  ): { root: string; mountinfoPath: string } {
    const root = join(dir, `host${n++}`, 'sys', 'fs', 'cgroup');
    mkdirSync(join(root, 'unified'), { recursive: true });
    writeFileSync(
      join(root, kind === 'unified' ? 'cgroup.controllers' : 'unified/cgroup.controllers'),
      kind === 'unified' ? `${controllers}\n` : '\n',
    );
    const mountinfoPath = join(dir, `mountinfo${n}`);
    writeFileSync(mountinfoPath, mountinfo(root, kind));
    return { root, mountinfoPath };
  }

  test('cgroup v1 (separate cpu,cpuacct and memory hierarchies)', async () => {
    const host = fakeHost('none');
    assert.deepEqual(await detectCgroupLayout(host), {
      version: 1,
      mounts: { cpu: `${host.root}/cpu,cpuacct`, memory: `${host.root}/memory` },
    });
  });

  test('hybrid: the controllers bound to v1 win over an empty cgroup2 mount', async () => {
    const host = fakeHost('hybrid');
    assert.equal((await detectCgroupLayout(host)).version, 1);
  });

  test('cgroup v2 (unified hierarchy at the root)', async () => {
    const host = fakeHost('unified');
    assert.deepEqual(await detectCgroupLayout(host), { version: 2, mounts: { cpu: host.root, memory: host.root } });
  });

  test('cgroup v2 without the memory controller: an error that says what was found', async () => {
    const host = fakeHost('unified', 'cpu io pids');
    await assert.rejects(detectCgroupLayout(host), (error: unknown) => {
      assert.ok(error instanceof CgroupError);
      assert.match(error.message, /no cgroup hierarchy .* offers both the cpu and the memory controller/);
      assert.match(error.message, /cgroup2, controllers: cpu io pids/);
      assert.equal(error.file, host.mountinfoPath);
      return true;
    });
  });

  test('only mounts under the given root count', async () => {
    const host = fakeHost('none');
    await assert.rejects(detectCgroupLayout({ ...host, root: join(dir, 'elsewhere') }), /no cgroup mounts/);
  });

  test('an unreadable mountinfo names the file', async () => {
    await assert.rejects(detectCgroupLayout({ mountinfoPath: join(dir, 'missing') }), /cannot read .*missing/);
  });

  test('this host: a layout is found (v1 or v2)', async () => {
    const layout = await detectCgroupLayout();
    assert.ok(layout.version === 1 || layout.version === 2);
  });
});

describe('parseProcCgroup / cgroupPathsOf', () => {
  const text = '9:name=systemd:/\n4:memory:/process_api/abc\n2:cpu,cpuacct:/\n0::/user.slice\n';
  test('v1 controller lines and the v2 line', () => {
    const parsed = parseProcCgroup(text);
    assert.equal(parsed.unified, '/user.slice');
    assert.equal(parsed.v1.memory, '/process_api/abc');
    assert.equal(parsed.v1.cpuacct, '/');
    assert.deepEqual(cgroupPathsOf(parsed, { version: 1, mounts: { cpu: '/a', memory: '/b' } }), { cpu: '/', memory: '/process_api/abc' });
    assert.deepEqual(cgroupPathsOf(parsed, { version: 2, mounts: { cpu: '/a', memory: '/a' } }), {
      cpu: '/user.slice',
      memory: '/user.slice',
    });
  });
});
