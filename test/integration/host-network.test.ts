// The host network a VM gets, for real in this test's namespace: the bridge with its address (set
// up again when it lost it), and per VM a TAP owned by the VM's user, on the bridge as an isolated
// port without learning, up, with its neighbor entry pinned and its guard element; attaching again
// repairs, detaching removes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { requireTestNetns } from '../support/agent-process.ts';
import { applyFirewall, parseEgress } from '../../src/network/firewall.ts';
import { parseCidr } from '../../src/network/cidr.ts';
import { createHostNetwork } from '../../src/network/host-network.ts';

requireTestNetns();

function ip(...args: string[]): string {
  const out = spawnSync('ip', args, { encoding: 'utf8' });
  assert.equal(out.status, 0, `ip ${args.join(' ')}: ${out.stderr}`);
  return out.stdout;
}

interface BridgePort {
  ifname: string;
  master?: string;
  flags?: string[];
  isolated?: boolean;
  learning?: boolean;
}

function port(tap: string): BridgePort | undefined {
  const out = spawnSync('bridge', ['-j', '-d', 'link', 'show', 'dev', tap], { encoding: 'utf8' });
  return out.status === 0 ? (JSON.parse(out.stdout) as BridgePort[])[0] : undefined;
}

test('a VM is attached in one go, attached again after damage, and detached without a trace', async () => {
  const cidr = parseCidr('192.168.100.1/24');
  const network = createHostNetwork('clarateach0', cidr);
  await network.ensureBridge();
  await network.ensureBridge();
  assert.match(ip('-4', '-o', 'addr', 'show', 'dev', 'clarateach0'), /inet 192\.168\.100\.1\/24/);
  assert.equal(ip('-4', '-o', 'addr', 'show', 'dev', 'clarateach0').trim().split('\n').length, 1, 'the address once');
  // Its own MAC (from its address), not its lowest port's: see the ten-VM test.
  assert.match(ip('link', 'show', 'dev', 'clarateach0'), /link\/ether 06:00:c0:a8:64:01 /);
  // Checked quickly after the first time, but a bridge that lost its address, went down or was
  // deleted is set up again.
  ip('addr', 'flush', 'dev', 'clarateach0');
  await network.ensureBridge();
  assert.match(ip('-4', '-o', 'addr', 'show', 'dev', 'clarateach0'), /inet 192\.168\.100\.1\/24/);
  ip('link', 'set', 'clarateach0', 'down');
  await network.ensureBridge();
  assert.match(ip('link', 'show', 'dev', 'clarateach0'), /[<,]UP[,>]/);
  ip('link', 'del', 'clarateach0');
  await network.ensureBridge();
  assert.match(ip('-4', '-o', 'addr', 'show', 'dev', 'clarateach0'), /inet 192\.168\.100\.1\/24/);
  await applyFirewall({ bridge: 'clarateach0', cidr, egress: parseEgress('none'), dns: '1.1.1.1', vms: [] });

  const vm = { tap: 'ctc0a8640b', mac: '06:00:c0:a8:64:0b', ip: '192.168.100.11' };
  const owner = { uid: 65534, gid: 65534 };
  const check = (): void => {
    const p = port(vm.tap);
    assert.equal(p?.master, 'clarateach0');
    assert.equal(p?.isolated, true, 'isolated port');
    assert.equal(p?.learning, false, 'no learning');
    assert.ok(p?.flags?.includes('UP'), 'up');
    assert.equal(readFileSync(`/proc/self/net/dev`, 'utf8').includes(`${vm.tap}:`), true);
    assert.match(ip('neigh', 'show', vm.ip, 'dev', 'clarateach0'), /lladdr 06:00:c0:a8:64:0b PERMANENT/);
    assert.match(
      spawnSync('nft', ['list', 'ruleset'], { encoding: 'utf8' }).stdout,
      /"ctc0a8640b" \. 06:00:c0:a8:64:0b \. 192\.168\.100\.11/,
    );
    assert.match(ip('-d', 'link', 'show', 'dev', vm.tap), /tun type tap .*user (65534|nobody) group (65534|nogroup)/);
  };
  await network.attach(vm, owner);
  check();

  // Damage (isolation off, no neighbor entry): attaching again, as a VM booted again does, repairs.
  spawnSync('bridge', ['link', 'set', 'dev', vm.tap, 'isolated', 'off']);
  spawnSync('ip', ['neigh', 'del', vm.ip, 'dev', 'clarateach0']);
  await network.attach(vm, owner);
  check();
  assert.deepEqual(await network.listTaps(), [vm.tap]);

  await network.detach(vm);
  assert.equal(port(vm.tap), undefined, 'TAP gone');
  assert.doesNotMatch(ip('neigh', 'show', 'dev', 'clarateach0'), /192\.168\.100\.11 /);
  assert.doesNotMatch(spawnSync('nft', ['list', 'ruleset'], { encoding: 'utf8' }).stdout, /ctc0a8640b/);
  assert.deepEqual(await network.listTaps(), []);
});

test('a create whose bridge is gone fails with the reason and leaves no TAP', async () => {
  const network = createHostNetwork('ctgone0', parseCidr('10.77.0.1/24'));
  const vm = { tap: 'ct0a4d000b', mac: '06:00:0a:4d:00:0b', ip: '10.77.0.11' };
  await assert.rejects(network.attach(vm), /ctgone0/);
  await network.detach(vm).catch(() => undefined);
  assert.ok(!(await network.listTaps()).includes(vm.tap), 'no TAP left');
});

// Ten TAPs joining one bridge: with a MAC of its own, the bridge keeps it, and so the pinned
// neighbor entries of the VMs already there (a bridge's MAC change flushes them all).
test('ten VMs attached and detached at once through the kept-open ip and nft, also after those were killed', async () => {
  const ours = (): string[] =>
    spawnSync('pgrep', ['-P', String(process.pid), '-x', 'ip|nft'], { encoding: 'utf8' })
      .stdout.trim()
      .split('\n')
      .filter(Boolean);
  const earlier = new Set(ours()); // the other tests' networks
  const cidr = parseCidr('192.168.100.1/24');
  const network = createHostNetwork('clarateach0', cidr);
  await network.ensureBridge();
  await applyFirewall({ bridge: 'clarateach0', cidr, egress: parseEgress('none'), dns: '1.1.1.1', vms: [] });
  const vms = Array.from({ length: 10 }, (_, i) => {
    const last = 20 + i;
    const hex = last.toString(16).padStart(2, '0');
    return { tap: `ctc0a864${hex}`, mac: `06:00:c0:a8:64:${hex}`, ip: `192.168.100.${last}` };
  });
  const interpreters = (): string[] => ours().filter((pid) => !earlier.has(pid));

  await Promise.all(vms.slice(0, 5).map((vm) => network.attach(vm)));
  assert.equal(interpreters().length, 2, 'one ip and one nft, kept open');
  // Killed (an operator's pkill, a crash): the next groups start new ones.
  spawnSync('kill', ['-9', ...interpreters()]);
  await Promise.all(vms.slice(5).map((vm) => network.attach(vm)));
  const guards = spawnSync('nft', ['list', 'set', 'bridge', 'clarateach', 'vms'], { encoding: 'utf8' }).stdout;
  for (const vm of vms) {
    assert.equal(port(vm.tap)?.isolated, true, `${vm.tap} isolated on the bridge`);
    assert.match(ip('neigh', 'show', vm.ip, 'dev', 'clarateach0'), new RegExp(`lladdr ${vm.mac} PERMANENT`));
    assert.ok(guards.includes(`"${vm.tap}" . ${vm.mac} . ${vm.ip}`), `${vm.tap} guarded`);
  }

  await Promise.all(vms.map((vm) => network.detach(vm)));
  await Promise.all(vms.map((vm) => network.detach(vm))); // again: nothing left to remove is fine
  assert.deepEqual(await network.listTaps(), []);
  assert.doesNotMatch(spawnSync('nft', ['list', 'set', 'bridge', 'clarateach', 'vms'], { encoding: 'utf8' }).stdout, /ctc0a864/);
  assert.doesNotMatch(ip('neigh', 'show', 'dev', 'clarateach0'), /PERMANENT/);
});
