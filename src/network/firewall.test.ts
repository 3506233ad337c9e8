import { test } from 'node:test';
import assert from 'node:assert/strict';
import { firewallRuleset, parseEgress } from './firewall.ts';
import { parseCidr } from './cidr.ts';

test('EGRESS: nat, none, or an allow-list; anything else is refused with the entry named', () => {
  assert.deepEqual(parseEgress('nat'), { mode: 'nat' });
  assert.deepEqual(parseEgress(' none '), { mode: 'none' });
  assert.deepEqual(parseEgress('140.82.112.0/20:443,151.101.0.0/16:80-443,8.8.8.8/32'), {
    mode: 'allow',
    rules: [
      { cidr: '140.82.112.0/20', ports: { from: 443, to: 443 } },
      { cidr: '151.101.0.0/16', ports: { from: 80, to: 443 } },
      { cidr: '8.8.8.8/32' },
    ],
  });
  assert.throws(() => parseEgress('everything'), /"everything" is not CIDR/);
  assert.throws(() => parseEgress('10.0.0.0/33'), /not a valid CIDR/);
  assert.throws(() => parseEgress('10.0.0.0/8:0'), /bad port/);
  assert.throws(() => parseEgress('10.0.0.0/8:500-400'), /bad port/);
});

const base = {
  bridge: 'clarateach0',
  cidr: parseCidr('192.168.100.1/24'),
  dns: '1.1.1.1',
  vms: [{ tap: 'ctc0a8640b', mac: '06:00:c0:a8:64:0b', ip: '192.168.100.11' }],
};

test('nat: public internet only, masquerade on the uplink; every VM in the anti-spoofing set', () => {
  const rules = firewallRuleset({ ...base, egress: { mode: 'nat' }, uplink: 'ens4' });
  assert.match(rules, /iifname "clarateach0" oifname "ens4" ip daddr \{ [^}]*10\.0\.0\.0\/8[^}]*169\.254\.0\.0\/16[^}]* \} drop/);
  assert.match(rules, /ip saddr 192\.168\.100\.0\/24 oifname "ens4" masquerade/);
  assert.match(rules, /elements = \{ "ctc0a8640b" \. 06:00:c0:a8:64:0b \. 192\.168\.100\.11 \}/);
  assert.match(rules, /chain input \{[^}]*iifname "clarateach0" ct state established,related accept\s+iifname "clarateach0" drop/);
});

test('none, or no uplink: nothing leaves the bridge', () => {
  for (const rules of [
    firewallRuleset({ ...base, egress: { mode: 'none' }, uplink: 'ens4' }),
    firewallRuleset({ ...base, egress: { mode: 'nat' }, uplink: undefined }),
  ]) {
    assert.doesNotMatch(rules, /oifname "ens4" accept/);
    assert.match(rules, /oifname "clarateach0" drop\n\s+iifname "clarateach0" drop\n\s+\}/);
  }
});

test('allow-list: listed destinations and the DNS server, nothing else', () => {
  const rules = firewallRuleset({ ...base, egress: parseEgress('140.82.112.0/20:443'), uplink: 'ens4' });
  assert.match(rules, /ip daddr 140\.82\.112\.0\/20 meta l4proto \{ tcp, udp \} th dport 443 accept/);
  assert.match(rules, /ip daddr 1\.1\.1\.1 meta l4proto \{ tcp, udp \} th dport 53 accept/);
  assert.match(rules, /th dport 53 accept\n\s+iifname "clarateach0" drop/);
});
