// TAP and MAC naming: derived from the address, unique, short, and what the orphan sweep matches.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ipToInt } from './cidr.ts';
import { INTERFACE_NAME, macForIp, TAP_PATTERN, tapNameForIp } from './tap.ts';

test('MAC and TAP name are derived from the address, unique and short', () => {
  const ip = ipToInt('192.168.100.11');
  assert.equal(macForIp(ip), '06:00:c0:a8:64:0b');
  assert.equal(tapNameForIp(ip), 'ctc0a8640b');
  assert.ok(tapNameForIp(ipToInt('255.255.255.254')).length <= 15);
  assert.notEqual(tapNameForIp(ip), tapNameForIp(ip + 1));
});

test('every TAP name this agent makes matches the pattern the orphan sweep uses, and is a valid device name', () => {
  for (const ip of ['10.0.0.2', '192.168.100.11', '255.255.255.254']) {
    const name = tapNameForIp(ipToInt(ip));
    assert.match(name, TAP_PATTERN);
    assert.match(name, INTERFACE_NAME);
  }
  assert.doesNotMatch('eth0', TAP_PATTERN);
});
