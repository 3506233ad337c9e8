// Initramfs module selection: name matching, dependency order, built-ins, errors.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { moduleName, parseModuleIndex, selectModules } from './modules.ts';

const DEP = `kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.zst kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko.zst: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/fs/a.ko: kernel/fs/b.ko
kernel/fs/b.ko: kernel/fs/a.ko
`;
const BUILTIN = 'kernel/fs/ext4/ext4.ko\nkernel/crypto/crc32c_generic.ko\n';

test('module names ignore directories, compression and dash/underscore', () => {
  assert.equal(moduleName('kernel/drivers/net/virtio_net.ko.xz'), 'virtio_net');
  assert.equal(moduleName('crc32c-intel'), 'crc32c_intel');
  assert.equal(moduleName('x.ko.zst'), 'x');
});

test('dependencies come first, each module once, built-ins are skipped', () => {
  const index = parseModuleIndex(DEP, BUILTIN);
  const selection = selectModules(index, ['virtio_mmio', 'virtio-net', 'ext4', 'crc32c_intel', 'virtio_mmio']);
  assert.deepEqual(selection.loadOrder, [
    'kernel/drivers/virtio/virtio_ring.ko',
    'kernel/drivers/virtio/virtio.ko',
    'kernel/drivers/virtio/virtio_mmio.ko',
    'kernel/net/core/failover.ko',
    'kernel/drivers/net/net_failover.ko.zst',
    'kernel/drivers/net/virtio_net.ko.xz',
    'kernel/arch/x86/crypto/crc32c-intel.ko',
  ]);
  assert.deepEqual(selection.builtin, ['ext4']);
});

test('unknown modules and cycles are errors naming the culprit', () => {
  const index = parseModuleIndex(DEP, BUILTIN);
  assert.throws(() => selectModules(index, ['nosuch']), /nosuch is neither a module nor built into this kernel/);
  assert.throws(() => selectModules(index, ['a']), /dependency cycle a -> b -> a/);
});
