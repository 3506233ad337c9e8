// nftables accepts the ruleset of every egress policy, applied for real in this test's namespace.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { requireTestNetns } from '../support/agent-process.ts';
import { applyFirewall, parseEgress } from '../../src/network/firewall.ts';
import { ensureBridge } from '../../src/network/bridge.ts';
import { parseCidr } from '../../src/network/cidr.ts';

requireTestNetns();

test('every EGRESS policy installs, replaces the previous one, and is listed by nft', async () => {
  const cidr = parseCidr('192.168.100.1/24');
  // An uplink with a default route, as a cloud VM has (both veth ends stay in this namespace).
  for (const args of [
    ['link', 'add', 'up0', 'type', 'veth', 'peer', 'name', 'up1'],
    ['addr', 'add', '203.0.113.1/24', 'dev', 'up0'],
    ['link', 'set', 'up0', 'up'],
    ['link', 'set', 'up1', 'up'],
    ['route', 'add', 'default', 'via', '203.0.113.2'],
  ]) {
    assert.equal(spawnSync('ip', args).status, 0, args.join(' '));
  }
  await ensureBridge('clarateach0', cidr);
  const vms = [{ tap: 'ctc0a8640b', mac: '06:00:c0:a8:64:0b', ip: '192.168.100.11' }];
  for (const egress of ['nat', 'none', '140.82.112.0/20:443,8.8.8.8/32']) {
    const result = await applyFirewall({ bridge: 'clarateach0', cidr, egress: parseEgress(egress), dns: '1.1.1.1', vms });
    assert.equal(result.uplink, 'up0');
    const listed = spawnSync('nft', ['list', 'ruleset'], { encoding: 'utf8' }).stdout;
    assert.equal(listed.match(/table inet clarateach/g)?.length, 1, egress);
    assert.match(listed, /"ctc0a8640b" \. 06:00:c0:a8:64:0b \. 192\.168\.100\.11/);
    if (egress.includes('140.82')) assert.match(listed, /140\.82\.112\.0\/20/);
    if (egress === 'none') assert.doesNotMatch(listed, /oifname "up0" accept/);
    else assert.match(listed, /oifname "up0" masquerade/);
    if (egress === 'nat') assert.equal(readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim(), '1');
  }
});
