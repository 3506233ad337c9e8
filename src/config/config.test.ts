import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, loadConfig } from './config.ts';

test('defaults follow the operators guide', () => {
  const c = loadConfig({});
  assert.equal(c.port, 9090);
  assert.equal(c.host, '127.0.0.1');
  assert.equal(c.capacity, 50);
  assert.equal(c.imagesDir, '/var/lib/clarateach/images');
  assert.equal(c.stateDir, '/var/lib/clarateach/state');
  assert.equal(c.bridgeName, 'clarateach0');
  assert.equal(c.bridgeCidr.text, '192.168.100.1/24');
  assert.equal(c.hypervisor, 'auto');
  assert.equal(c.agentToken, undefined);
});

test('flags override the environment', () => {
  const c = loadConfig({ PORT: '1000', CAPACITY: '3' }, ['--port', '2000', '--worker-id=w1']);
  assert.equal(c.port, 2000);
  assert.equal(c.capacity, 3);
  assert.equal(c.workerId, 'w1');
});

function refusal(env: NodeJS.ProcessEnv, argv: string[] = []): string {
  try {
    loadConfig(env, argv);
  } catch (error) {
    assert.ok(error instanceof ConfigError);
    return error.message;
  }
  assert.fail('expected a configuration error');
}

test('a bad value names its variable', () => {
  assert.match(refusal({ PORT: 'http' }), /^PORT: /);
  assert.match(refusal({ PORT: '70000' }), /^PORT: .*between/);
  assert.match(refusal({ CAPACITY: '-1' }), /^CAPACITY: /);
  assert.match(refusal({ HYPERVISOR: 'xen' }), /^HYPERVISOR: /);
  assert.match(refusal({ BRIDGE_CIDR: '192.168.100.0/24' }), /^BRIDGE_CIDR: /);
  assert.match(refusal({ BRIDGE_NAME: 'a-very-long-bridge-name' }), /^BRIDGE_NAME: /);
  assert.match(refusal({ IMAGES_DIR: 'relative/path' }), /^IMAGES_DIR: /);
  assert.match(refusal({ VM_MEMORY_MB: '64' }), /^VM_MEMORY_MB: /);
  assert.match(refusal({ STATE_DIR: `/${'x'.repeat(90)}` }), /^STATE_DIR: .*too long/);
  // "under 70 characters", as the message and the README say: every socket below it fits, a
  // snapshot's template VMM's included (a longer one made every seat boot cold).
  assert.match(refusal({ STATE_DIR: `/${'x'.repeat(69)}` }), /^STATE_DIR: .*under 70/);
  assert.equal(loadConfig({ STATE_DIR: `/${'x'.repeat(68)}` }).stateDir, `/${'x'.repeat(68)}`);
  assert.match(refusal({}, ['--bogus', '1']), /^--bogus: unknown flag/);
});

test('an open agent is never exposed: non-loopback HOST needs AGENT_TOKEN', () => {
  assert.match(refusal({ HOST: '0.0.0.0' }), /^HOST: .*AGENT_TOKEN/);
  assert.equal(loadConfig({ HOST: '0.0.0.0', AGENT_TOKEN: 'secret123' }).host, '0.0.0.0');
  assert.match(refusal({ AGENT_TOKEN: 'short' }), /^AGENT_TOKEN: /);
});
