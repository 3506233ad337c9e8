// Plain data describing a seat's VM, as stored and as returned by the API.

/** What a VM is made from when its create names no template. */
export const DEFAULT_TEMPLATE = 'default';
/** Template names: short, lower case, safe as a directory name and a metric label. */
export const TEMPLATE_NAME_PATTERN = '^[a-z0-9][a-z0-9-]{0,39}$';

/** `stopped`: its VMM was stopped on request (an idle seat); its disk, address and TAP are kept for a start. */
export type VmStatus = 'creating' | 'running' | 'stopped' | 'failed' | 'deleting';

/** How a VM's first boot began: restored from its template's snapshot, or booted from its kernel. */
export type StartMode = 'snapshot' | 'cold';

/** How a VM's create went: its start mode, why it was not a snapshot start, and each boot step's ms. */
export interface StartRecord {
  readonly mode: StartMode;
  /** Why the VM booted cold (no snapshot yet, stale, restore failed); null for a snapshot start. */
  readonly reason: string | null;
  readonly stepsMs: Readonly<Record<string, number>>;
}

export interface VmRecord {
  readonly workshopId: string;
  readonly seatId: number;
  readonly ip: string;
  readonly mac: string;
  readonly tapName: string;
  readonly vcpus: number;
  readonly memoryMb: number;
  readonly hypervisor: string;
  /** The template and the build of it the VM was created from (and is booted again from). */
  readonly template: string;
  readonly buildId: string;
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
  /** A failed create whose cleanup failed too: the next start removes it rather than booting it. */
  readonly undoOnStart: boolean;
  /** Recorded once the create's boot plan ran (cold with no steps until then). */
  readonly start: StartRecord;
}

/** Filesystem-safe id used for the VM's directory: `<workshop>.<seat>` ('.' never occurs in a workshop id). */
export function vmId(workshopId: string, seatId: number): string {
  return `${workshopId}.${seatId}`;
}
