// The ports of the lifecycle bundled as one value, as the composition root hands them over.
import type { Clock, DiskPort, HypervisorDriver, ImageCatalog, NetworkPort, ProcessPort, VmRepository } from './ports.ts';

export interface LifecyclePorts {
  readonly driver: HypervisorDriver;
  readonly network: NetworkPort;
  readonly disks: DiskPort;
  readonly images: ImageCatalog;
  readonly store: VmRepository;
  readonly processes: ProcessPort;
  readonly clock: Clock;
}
