// Picks the hypervisor driver: HYPERVISOR=qemu|firecracker, or auto (Firecracker when its binary
// and a working KVM are present, QEMU otherwise).
import { imagePaths } from '../image/layout.ts';
import type { Logger } from 'pino';
import type { AgentConfig } from '../config/config.ts';
import { ConfigError } from '../config/config.ts';
import { commandExists } from '../shared/exec.ts';
import type { HypervisorDriver } from '../vms/ports.ts';
import { createFirecrackerDriver } from './firecracker/index.ts';
import { createQemuDriver } from './qemu/index.ts';
import { detectAcceleration } from './qemu/accel.ts';

type SelectConfig = Pick<
  AgentConfig,
  | 'hypervisor'
  | 'firecrackerBin'
  | 'jailerBin'
  | 'jailChrootBaseDir'
  | 'qemuBin'
  | 'imagesDir'
  | 'stateDir'
  | 'qemuAccel'
  | 'seatsCpuWeight'
>;

/** KVM that really runs a guest: proven by QEMU's bounded trial boot (cached in STATE_DIR). */
async function kvmWorks(config: SelectConfig, log: Logger): Promise<boolean> {
  if (!(await commandExists(config.qemuBin))) return false;
  const verdict = await detectAcceleration({
    qemuBin: config.qemuBin,
    kernelPath: imagePaths(config.imagesDir).kernel,
    stateDir: config.stateDir,
    log,
  });
  return verdict.accel === 'kvm';
}

export async function selectDriver(config: SelectConfig, log: Logger): Promise<HypervisorDriver> {
  const firecracker = (): Promise<HypervisorDriver> =>
    createFirecrackerDriver({
      firecrackerBin: config.firecrackerBin,
      log,
      cgroup: { cpuWeight: config.seatsCpuWeight },
      ...(config.jailerBin === undefined ? {} : { jailerBin: config.jailerBin, jail: { chrootBaseDir: config.jailChrootBaseDir } }),
    });
  const qemu = async (): Promise<HypervisorDriver> => {
    if (!(await commandExists(config.qemuBin))) {
      throw new ConfigError('QEMU_BIN', `${config.qemuBin} not found (apt-get install qemu-system-x86)`);
    }
    return createQemuDriver({
      qemuBin: config.qemuBin,
      imagesDir: config.imagesDir,
      stateDir: config.stateDir,
      log,
      accel: config.qemuAccel,
      cgroup: { cpuWeight: config.seatsCpuWeight },
    });
  };
  switch (config.hypervisor) {
    case 'firecracker':
      if (!(await commandExists(config.firecrackerBin))) {
        throw new ConfigError('FIRECRACKER_BIN', `${config.firecrackerBin} not found (HYPERVISOR=firecracker needs it)`);
      }
      return firecracker();
    case 'qemu':
      return qemu();
    case 'auto':
      if ((await commandExists(config.firecrackerBin)) && (await kvmWorks(config, log))) return firecracker();
      log.info({ hypervisor: 'qemu' }, 'auto: using QEMU (Firecracker needs its binary and a working KVM)');
      return qemu();
  }
}
