// Template builds with real QEMU guests: a VM made before a rebuild of its template is booted
// again (after its VMM dies) from the build it was made from, with its files; a VM made after
// gets the new build; a build no VM uses any more is removed.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { json, requireTestNetns, startAgent, testImagesDir, type AgentProcess } from '../support/agent-process.ts';
import { processStartTime } from '../../src/host/process.ts';

requireTestNetns();

interface VmJson {
  seat_id: number;
  pid: number;
  restarts: number;
  ready: boolean;
  template: string;
  build_id: string;
}

describe('template builds', { timeout: 10 * 60_000 }, () => {
  let agent: AgentProcess;
  let imagesDir: string;

  before(async () => {
    // A template of this test's own: hard links of the test image, so "rebuilding" it here
    // touches no other test's files.
    mkdirSync(join(testImagesDir(), '..'), { recursive: true });
    imagesDir = mkdtempSync(join(testImagesDir(), '..', 'templates-test-'));
    for (const name of ['vmlinux', 'initrd.img', 'rootfs.ext4']) linkSync(join(testImagesDir(), name), join(imagesDir, name));
    agent = await startAgent({ port: 19098, imagesDir });
  });
  after(async () => {
    for (const seat of [1, 2]) await agent.api(`/vms/tpl/${seat}`, { method: 'DELETE' });
    await agent.kill('SIGTERM');
    rmSync(imagesDir, { recursive: true, force: true });
  });

  const vm = async (seat: number): Promise<VmJson> => (await (await agent.api(`/vms/tpl/${seat}`)).json()) as VmJson;
  const cmdline = (pid: number): string => readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');

  test('a rebuild changes new seats only; a seat booted again keeps its build and its files', async () => {
    const created = await agent.api('/vms', json({ workshop_id: 'tpl', seat_id: 1, wait: 'ready', wait_timeout_s: 180 }));
    const body = await created.text();
    assert.equal(created.status, 201, body);
    const first = JSON.parse(body) as VmJson;
    assert.equal(first.template, 'default');
    assert.match(cmdline(first.pid), new RegExp(`builds/default/${first.build_id}/rootfs\\.ext4`));
    const put = await agent.api('/proxy/tpl/1/files/kept.txt', { method: 'PUT', body: 'written before the rebuild' });
    assert.ok(put.ok, `upload: ${put.status}`);

    // What `clarateach image build` does: a new file renamed over the old name.
    copyFileSync(join(imagesDir, 'rootfs.ext4'), join(imagesDir, '.rootfs.ext4.new'));
    renameSync(join(imagesDir, '.rootfs.ext4.new'), join(imagesDir, 'rootfs.ext4'));
    const second = (await (await agent.api('/vms', json({ workshop_id: 'tpl', seat_id: 2 }))).json()) as VmJson;
    assert.notEqual(second.build_id, first.build_id);
    assert.match(cmdline(second.pid), new RegExp(`builds/default/${second.build_id}/`));

    process.kill(first.pid, 'SIGKILL');
    let again = await vm(1);
    for (let waited = 0; !(again.restarts === 1 && again.ready); waited += 500) {
      assert.ok(waited < 180_000, `seat 1 booted again and ready: ${JSON.stringify(again)}`);
      await sleep(500);
      again = await vm(1);
    }
    assert.equal(again.build_id, first.build_id);
    assert.match(cmdline(again.pid), new RegExp(`builds/default/${first.build_id}/rootfs\\.ext4`), 'the old build, not the rebuilt one');
    assert.equal(await (await agent.api('/proxy/tpl/1/files/kept.txt')).text(), 'written before the rebuild');

    const templates = (await (await agent.api('/templates')).json()) as {
      templates: { name: string; current_build: string; builds: { id: string; vms: number }[] }[];
    };
    assert.deepEqual(
      templates.templates[0]?.builds.map((b) => [b.id, b.vms]).sort(),
      [
        [first.build_id, 1],
        [second.build_id, 1],
      ].sort(),
    );
    assert.equal(templates.templates[0]?.current_build, second.build_id);

    assert.equal((await agent.api('/vms/tpl/1', { method: 'DELETE' })).status, 204);
    for (let waited = 0; existsSync(join(imagesDir, 'builds', 'default', first.build_id)); waited += 100) {
      assert.ok(waited < 10_000, 'the build no VM uses any more is removed');
      await sleep(100);
    }
    assert.ok(existsSync(join(imagesDir, 'builds', 'default', second.build_id)));
    assert.equal(processStartTime(again.pid), undefined);
  });
});
