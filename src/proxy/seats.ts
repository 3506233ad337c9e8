// All the proxy needs of the lifecycle: finding a seat's VM (throws VmError vm_not_found).
import type { VmRecord } from '../vms/model.ts';

export interface SeatLookup {
  get(workshopId: string, seatId: number): VmRecord;
}
