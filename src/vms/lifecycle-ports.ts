// The ports of the lifecycle bundled as one value, as the composition root hands them over.
import type { Clock, DiskPort, HypervisorDriver, NetworkPort, ProcessPort, VmRepository } from './ports.ts';

export interface LifecyclePorts {
  readonly driver: HypervisorDriver;
  readonly network: NetworkPort;
  readonly disks: DiskPort;
  readonly store: VmRepository;
  readonly processes: ProcessPort;
  readonly clock: Clock;
}
