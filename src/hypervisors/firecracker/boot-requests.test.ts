// The API calls that configure and boot a VM: their order, their bodies, and their fit to Firecracker's OpenAPI document.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { VmLaunchSpec } from '../../vms/ports.ts';
import { BOOT_ARGS_PREFIX, bootCalls, buildBootArgs } from './boot-requests.ts';
import { FirecrackerSpecValidator } from '../../../test/support/firecracker/openapi-validator.ts';

const spec: VmLaunchSpec = {
  id: 'ws1.4',
  vcpus: 2,
  memoryMb: 1024,
  kernelPath: '/var/lib/ct/images/vmlinux',
  initrdPath: '/var/lib/ct/images/initrd.img',
  kernelArgs: 'ip=10.0.0.5::10.0.0.1:255.255.255.0:seat-4:eth0:off',
  baseDiskPath: '/var/lib/ct/images/rootfs.ext4',
  layerDiskPath: '/var/lib/ct/vms/ws1.4/layer.ext4',
  tapName: 'ct-ws1-4',
  mac: '06:00:0a:00:00:05',
  runDir: '/var/lib/ct/vms/ws1.4',
  consoleLogPath: '/var/lib/ct/vms/ws1.4/console.log',
};

describe('boot requests', () => {
  test('boot args: the fixed prefix, then the lifecycle arguments', () => {
    assert.equal(BOOT_ARGS_PREFIX, 'console=ttyS0 reboot=k panic=1 pci=off clarateach.halt=reboot');
    assert.equal(buildBootArgs('quiet ip=dhcp'), 'console=ttyS0 reboot=k panic=1 pci=off clarateach.halt=reboot quiet ip=dhcp');
    assert.equal(buildBootArgs(''), 'console=ttyS0 reboot=k panic=1 pci=off clarateach.halt=reboot');
  });

  test('configure machine, boot source, base (ro), layer (rw), eth0, then InstanceStart', () => {
    assert.deepEqual(
      bootCalls(spec).map((c) => [c.method, c.path, c.body]),
      [
        ['PUT', '/machine-config', { vcpu_count: 2, mem_size_mib: 1024 }],
        [
          'PUT',
          '/boot-source',
          {
            kernel_image_path: '/var/lib/ct/images/vmlinux',
            initrd_path: '/var/lib/ct/images/initrd.img',
            boot_args: 'console=ttyS0 reboot=k panic=1 pci=off clarateach.halt=reboot ip=10.0.0.5::10.0.0.1:255.255.255.0:seat-4:eth0:off',
          },
        ],
        [
          'PUT',
          '/drives/base',
          { drive_id: 'base', path_on_host: '/var/lib/ct/images/rootfs.ext4', is_root_device: false, is_read_only: true },
        ],
        [
          'PUT',
          '/drives/layer',
          { drive_id: 'layer', path_on_host: '/var/lib/ct/vms/ws1.4/layer.ext4', is_root_device: false, is_read_only: false },
        ],
        ['PUT', '/network-interfaces/eth0', { iface_id: 'eth0', host_dev_name: 'ct-ws1-4', guest_mac: '06:00:0a:00:00:05' }],
        ['PUT', '/actions', { action_type: 'InstanceStart' }],
      ],
    );
  });

  test('every call conforms to the Firecracker OpenAPI document', () => {
    const validator = FirecrackerSpecValidator.load();
    for (const call of bootCalls(spec)) {
      const check = validator.check({
        method: call.method,
        path: call.path,
        body: JSON.stringify(call.body),
        contentType: 'application/json',
      });
      assert.deepEqual(check.violations, [], `${call.method} ${call.path}`);
      assert.equal(check.operation?.operationId, call.operationId);
    }
  });

  test('path ids equal body ids and use only what Firecracker allows in resource ids', () => {
    for (const call of bootCalls(spec)) {
      const body = call.body as unknown as Record<string, unknown>;
      const id = body.drive_id ?? body.iface_id;
      if (id === undefined) continue;
      assert.equal(call.path.split('/').at(-1), id);
      assert.match(String(id), /^[A-Za-z0-9_]+$/);
    }
  });
});
