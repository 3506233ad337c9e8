// QEMU's command line and the guest kernel's, per acceleration and per VM user (pure).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { VmLaunchSpec } from '../../vms/ports.ts';
import { buildQemuArgs, escapeOptionValue, kernelCommandLine, pidFilePath, qmpSocketPath } from './args.ts';

const spec: VmLaunchSpec = {
  id: 'my-test.1',
  vcpus: 2,
  memoryMb: 768,
  kernelPath: '/img/vmlinux',
  initrdPath: '/img/initrd.img',
  kernelArgs: 'ip=192.168.100.11::192.168.100.1:255.255.255.0:seat-1:eth0:off',
  baseDiskPath: '/img/rootfs.ext4',
  layerDiskPath: '/state/vms/my-test.1/layer.ext4',
  tapName: 'ct-tap1',
  mac: '06:00:c0:a8:64:0b',
  runDir: '/state/vms/my-test.1/run',
  consoleLogPath: '/state/vms/my-test.1/console.log',
};

function valueAfter(args: readonly string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag ? [args[i + 1] ?? ''] : []));
}

test('kernel command line: console, panic and (TCG only) tsc_early_khz are appended', () => {
  assert.equal(
    kernelCommandLine('ip=1.2.3.4::1.2.3.1:255.255.255.0:h:eth0:off', 'tcg', 2596130),
    'ip=1.2.3.4::1.2.3.1:255.255.255.0:h:eth0:off console=ttyS0 panic=1 tsc_early_khz=2596130',
  );
  assert.equal(kernelCommandLine('', 'kvm', 2596130), 'console=ttyS0 panic=1');
  assert.equal(kernelCommandLine('', 'tcg', undefined), 'console=ttyS0 panic=1');
});

test('kernel command line: what the lifecycle set is kept', () => {
  assert.equal(
    kernelCommandLine('  console=hvc0   panic=5 tsc_early_khz=1000 ', 'tcg', 2596130),
    'console=hvc0 panic=5 tsc_early_khz=1000',
  );
});

test('QEMU arguments: microvm with the spec resources, drives, NIC, QMP and pid file', () => {
  const args = buildQemuArgs({ spec, accel: 'tcg', tscKhz: 2596130 });
  assert.deepEqual(valueAfter(args, '-machine'), ['microvm,acpi=on']);
  assert.deepEqual(valueAfter(args, '-accel'), ['tcg,tb-size=128']);
  assert.deepEqual(valueAfter(args, '-cpu'), ['max']);
  assert.deepEqual(valueAfter(args, '-smp'), ['2']);
  assert.deepEqual(valueAfter(args, '-m'), ['768M']);
  for (const flag of ['-nodefaults', '-no-user-config', '-no-reboot', '-daemonize']) assert.ok(args.includes(flag), flag);
  assert.deepEqual(valueAfter(args, '-display'), ['none']);
  assert.deepEqual(valueAfter(args, '-kernel'), ['/img/vmlinux']);
  assert.deepEqual(valueAfter(args, '-initrd'), ['/img/initrd.img']);
  assert.match(valueAfter(args, '-append')[0] ?? '', /^ip=192\.168\.100\.11::.* console=ttyS0 panic=1 tsc_early_khz=2596130$/);
  assert.deepEqual(valueAfter(args, '-chardev'), ['file,id=console,path=/state/vms/my-test.1/console.log,append=on']);
  assert.deepEqual(valueAfter(args, '-serial'), ['chardev:console']);
  const drives = valueAfter(args, '-drive');
  assert.equal(drives.length, 2);
  assert.match(drives[0] ?? '', /^file=\/img\/rootfs\.ext4,format=raw,if=none,id=base,readonly=on$/);
  assert.match(drives[1] ?? '', /^file=\/state\/vms\/my-test\.1\/layer\.ext4,format=raw,if=none,id=layer,/);
  assert.deepEqual(valueAfter(args, '-device'), [
    'i8042',
    'virtio-blk-device,drive=base',
    'virtio-blk-device,drive=layer',
    'virtio-net-device,netdev=net0,mac=06:00:c0:a8:64:0b',
  ]);
  assert.deepEqual(valueAfter(args, '-netdev'), ['tap,id=net0,ifname=ct-tap1,script=no,downscript=no']);
  assert.deepEqual(valueAfter(args, '-qmp'), [`unix:${qmpSocketPath(spec.runDir)},server=on,wait=off`]);
  assert.deepEqual(valueAfter(args, '-pidfile'), [pidFilePath(spec.runDir)]);
});

test('QEMU arguments: KVM uses the host CPU and no TSC hint; no TAP means no NIC', () => {
  const args = buildQemuArgs({ spec: { ...spec, tapName: '' }, accel: 'kvm', tscKhz: 2596130, daemonize: false });
  assert.deepEqual(valueAfter(args, '-cpu'), ['host']);
  assert.doesNotMatch(valueAfter(args, '-append')[0] ?? '', /tsc_early_khz/);
  assert.equal(args.includes('-netdev'), false);
  assert.equal(args.includes('-daemonize'), false);
});

test('commas in paths are escaped for QEMU option values', () => {
  assert.equal(escapeOptionValue('/a,b/c'), '/a,,b/c');
  const args = buildQemuArgs({ spec: { ...spec, baseDiskPath: '/img,x/rootfs.ext4' }, accel: 'tcg' });
  assert.match(valueAfter(args, '-drive')[0] ?? '', /^file=\/img,,x\/rootfs\.ext4,/);
});

test('with a VM user: seccomp sandbox and -runas, keeping what -daemonize and -runas need', () => {
  const args = buildQemuArgs({ spec, accel: 'tcg', runAs: 'ctvm-ctc0a8640b' });
  const sandbox = args[args.indexOf('-sandbox') + 1] ?? '';
  assert.match(sandbox, /^on,/);
  assert.match(sandbox, /obsolete=deny/);
  assert.match(sandbox, /resourcecontrol=deny/);
  assert.equal(args[args.indexOf('-runas') + 1], 'ctvm-ctc0a8640b');
  assert.equal(buildQemuArgs({ spec, accel: 'tcg' }).includes('-runas'), false);
});
