import { test } from 'node:test';
import assert from 'node:assert/strict';
import { allocateIp, intToIp, ipToInt, maxSeatId, parseCidr } from './cidr.ts';

const cidr = parseCidr('192.168.100.1/24');

test('seat N gets 192.168.100.(10+N) when free', () => {
  for (const seat of [1, 2, 3, 50, 244]) {
    assert.equal(intToIp(allocateIp(cidr, seat, new Set()) ?? 0), `192.168.100.${10 + seat}`);
  }
});

test('a seat whose address another workshop holds gets the lowest free address, never a duplicate', () => {
  const used = new Set([ipToInt('192.168.100.11')]);
  const second = allocateIp(cidr, 1, used);
  assert.equal(intToIp(second ?? 0), '192.168.100.2');
  used.add(second ?? 0);
  assert.equal(intToIp(allocateIp(cidr, 1, used) ?? 0), '192.168.100.3');
});

test('never hands out the network, bridge or broadcast address; undefined when full', () => {
  const small = parseCidr('10.0.0.1/27'); // hosts .1-.30, bridge .1
  const used = new Set<number>();
  for (;;) {
    const ip = allocateIp(small, 1, used);
    if (ip === undefined) break;
    assert.ok(![small.network, small.gateway, small.broadcast].includes(ip), intToIp(ip));
    used.add(ip);
  }
  assert.equal(used.size, 29);
});

test('the highest seat is what the subnet allows', () => {
  assert.equal(maxSeatId(cidr), 244);
  assert.equal(maxSeatId(parseCidr('10.1.0.1/16')), 65535 - 1 - 10);
});

test('bad CIDRs are refused with a reason', () => {
  assert.throws(() => parseCidr('192.168.100.0/24'), /network or broadcast/);
  assert.throws(() => parseCidr('192.168.300.1/24'), /not an IPv4 address/);
  assert.throws(() => parseCidr('192.168.100.1'), /CIDR/);
  assert.throws(() => parseCidr('192.168.100.1/31'), /prefix/);
});
