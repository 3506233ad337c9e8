// The ports of the lifecycle bundled as one value, as the composition root hands them over.
import type { BaseLogger, Bindings } from 'pino';
import type { VmErrorCode } from './errors.ts';
import type { Clock, DiskPort, HypervisorDriver, ImageCatalog, NetworkPort, ProcessPort, SnapshotPort, VmRepository } from './ports.ts';

export interface LifecyclePorts {
  readonly driver: HypervisorDriver;
  readonly network: NetworkPort;
  readonly disks: DiskPort;
  readonly images: ImageCatalog;
  readonly store: VmRepository;
  readonly processes: ProcessPort;
  readonly clock: Clock;
  /** Snapshot start; without it (or when the driver has no snapshots) every seat boots cold. */
  readonly snapshots?: SnapshotPort;
}

/** How a create or delete ended: `ok`, or the VmError code it failed with. */
export type OperationOutcome = 'ok' | VmErrorCode | 'error';

/** What the lifecycle reports as it works, for whoever counts (metrics). Calls must not throw. */
export interface LifecycleObserver {
  createFinished(outcome: OperationOutcome, durationMs: number): void;
  deleteFinished(outcome: OperationOutcome, durationMs: number): void;
  /** A new VM's guest services answered, `sinceCreateMs` after its create began. */
  becameReady(sinceCreateMs: number): void;
  /** A recorded VM found at start-up or by the watchdog: its live VMM adopted, booted again, or failed. */
  recovered(outcome: 'adopted' | 'restarted' | 'failed'): void;
}

export const unobserved: LifecycleObserver = {
  createFinished: () => undefined,
  deleteFinished: () => undefined,
  becameReady: () => undefined,
  recovered: () => undefined,
};

/** The logger of whoever asked for an operation (a request's, carrying its id), or the lifecycle's own. */
export type OperationLog = Pick<BaseLogger, 'info' | 'warn' | 'error'> & { child(bindings: Bindings): OperationLog };
