// Test fixtures: a temp directory with a fake kernel (ELF magic), initrd and disks, a launch spec
// pointing at them, and a stand-in firecracker (and jailer) writing its logs there.
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { imagePaths } from '../../../src/image/layout.ts';
import type { VmLaunchSpec } from '../../../src/vms/ports.ts';
import { describeProcess, killProcess } from '../../../src/host/process.ts';
import { loggedPids, writeFakeFirecracker, type FakeFirecrackerOptions } from './fake-firecracker-shim.ts';
import { writeFakeJailer } from './fake-jailer-shim.ts';

export interface VmFixture {
  readonly dir: string;
  readonly spec: VmLaunchSpec;
  readonly violationsLog: string;
  readonly requestLog: string;
  /** Where the stand-in jailer logs its argv and steps. */
  readonly jailerLog: string;
  /** Writes the stand-in (into its own directory under `dir`) and returns its path. */
  fakeFirecracker(options?: Omit<FakeFirecrackerOptions, 'violationsLog' | 'requestLog'>): string;
  /** Writes the stand-in jailer (logging to `jailerLog`) and returns its path. */
  fakeJailer(options?: { procMounts?: string }): string;
  /** SIGKILLs every stand-in that logged to `requestLog`, then removes `dir`. */
  cleanup(): Promise<void>;
}

let shims = 0;

export interface FixtureOptions {
  /**
   * For a jailed (unprivileged) stand-in VMM: the directory is made traversable and the logs the
   * stand-in appends to writable by others; everything else stays as the agent (root) leaves it.
   */
  readonly jailed?: boolean;
}

export async function createVmFixture(vmId = 'my-test.1', options: FixtureOptions = {}): Promise<VmFixture> {
  // Short prefix: the API socket path must fit in a sockaddr_un.
  const dir = await mkdtemp(join(tmpdir(), 'fc-'));
  // The directory doubles as an images directory: file names from image/layout.ts.
  const images = imagePaths(dir);
  const kernelPath = images.kernel;
  const kernel = Buffer.alloc(4096);
  kernel.write('\x7fELF', 0, 'latin1');
  writeFileSync(kernelPath, kernel);
  const layerDiskPath = join(dir, 'layer.ext4');
  for (const path of [images.initrd, images.rootfs, layerDiskPath]) writeFileSync(path, Buffer.alloc(4096));
  const runDir = join(dir, 'run');
  mkdirSync(runDir);
  const spec: VmLaunchSpec = {
    id: vmId,
    vcpus: 2,
    memoryMb: 512,
    kernelPath,
    initrdPath: images.initrd,
    kernelArgs: 'ip=10.0.0.2::10.0.0.1:255.255.255.0:seat-1:eth0:off',
    baseDiskPath: images.rootfs,
    layerDiskPath,
    tapName: 'ct-tap1',
    mac: '06:00:0a:00:00:02',
    runDir,
    consoleLogPath: join(runDir, 'console.log'),
  };
  const violationsLog = join(dir, 'violations.log');
  const requestLog = join(dir, 'requests.log');
  const jailerLog = join(dir, 'jailer.log');
  if (options.jailed) {
    chmodSync(dir, 0o755);
    for (const log of [violationsLog, requestLog]) {
      writeFileSync(log, '');
      chmodSync(log, 0o666);
    }
  }
  return {
    dir,
    spec,
    violationsLog,
    requestLog,
    jailerLog,
    fakeFirecracker(options = {}) {
      const binDir = join(dir, `bin${shims++}`);
      mkdirSync(binDir);
      return writeFakeFirecracker(binDir, { ...options, violationsLog, requestLog });
    },
    fakeJailer(jailerOptions = {}) {
      const binDir = join(dir, `bin${shims++}`);
      mkdirSync(binDir);
      return writeFakeJailer(binDir, { log: jailerLog, ...jailerOptions });
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
