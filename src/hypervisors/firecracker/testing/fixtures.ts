// Test fixtures: a temp directory with a fake kernel (ELF magic), initrd and disks, a launch spec
// pointing at them, and a stand-in firecracker writing its logs there.
import { mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { VmLaunchSpec } from '../../driver.ts';
import { describeProcess, killProcess } from '../../process.ts';
import { loggedPids, writeFakeFirecracker, type FakeFirecrackerOptions } from './fake-firecracker-shim.ts';

export interface VmFixture {
  readonly dir: string;
  readonly spec: VmLaunchSpec;
  readonly violationsLog: string;
  readonly requestLog: string;
  /** Writes the stand-in (into its own directory under `dir`) and returns its path. */
  fakeFirecracker(options?: Omit<FakeFirecrackerOptions, 'violationsLog' | 'requestLog'>): string;
  /** SIGKILLs every stand-in that logged to `requestLog`, then removes `dir`. */
  cleanup(): Promise<void>;
}

let shims = 0;

export async function createVmFixture(vmId = 'my-test.1'): Promise<VmFixture> {
  // Short prefix: the API socket path must fit in a sockaddr_un.
  const dir = await mkdtemp(join(tmpdir(), 'fc-'));
  const kernelPath = join(dir, 'vmlinux');
  const kernel = Buffer.alloc(4096);
  kernel.write('\x7fELF', 0, 'latin1');
  writeFileSync(kernelPath, kernel);
  for (const name of ['initrd.img', 'rootfs.ext4', 'layer.ext4']) writeFileSync(join(dir, name), Buffer.alloc(4096));
  const runDir = join(dir, 'run');
  mkdirSync(runDir);
  const spec: VmLaunchSpec = {
    id: vmId,
    vcpus: 2,
    memoryMb: 512,
    kernelPath,
    initrdPath: join(dir, 'initrd.img'),
    kernelArgs: 'ip=10.0.0.2::10.0.0.1:255.255.255.0:seat-1:eth0:off',
    baseDiskPath: join(dir, 'rootfs.ext4'),
    layerDiskPath: join(dir, 'layer.ext4'),
    tapName: 'ct-tap1',
    mac: '06:00:0a:00:00:02',
    runDir,
    consoleLogPath: join(runDir, 'console.log'),
  };
  const violationsLog = join(dir, 'violations.log');
  const requestLog = join(dir, 'requests.log');
  return {
    dir,
    spec,
    violationsLog,
    requestLog,
    fakeFirecracker(options = {}) {
      const binDir = join(dir, `bin${shims++}`);
      mkdirSync(binDir);
      return writeFakeFirecracker(binDir, { ...options, violationsLog, requestLog });
    },
    async cleanup() {
      for (const pid of loggedPids(requestLog)) {
        const proc = describeProcess(pid);
        if (proc) await killProcess(proc);
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
