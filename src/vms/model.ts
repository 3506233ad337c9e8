// Plain data describing a seat's VM, as stored and as returned by the API.

export type VmStatus = 'creating' | 'running' | 'failed' | 'deleting';

export interface VmRecord {
  readonly workshopId: string;
  readonly seatId: number;
  readonly ip: string;
  readonly mac: string;
  readonly tapName: string;
  readonly vcpus: number;
  readonly memoryMb: number;
  readonly hypervisor: string;
  readonly status: VmStatus;
  /** VMM process id and start time; both null while no VMM runs. */
  readonly pid: number | null;
  readonly pidStartTime: number | null;
  /** Epoch milliseconds. */
  readonly createdAt: number;
  readonly runningAt: number | null;
  readonly readyAt: number | null;
  /** How many times the agent booted this VM again after its VMM died. */
  readonly restarts: number;
  readonly lastError: string | null;
}

/** Filesystem-safe id used for the VM's directory: `<workshop>.<seat>` ('.' never occurs in a workshop id). */
export function vmId(workshopId: string, seatId: number): string {
  return `${workshopId}.${seatId}`;
}
