// A seat as the URL names it (`/{vms,proxy}/{workshopID}/{seatID}/...`): the path parameters'
// schema and their checked reading, shared by the API routes and the proxy.
import { ApiError } from './errors.ts';

export const WORKSHOP_ID_PATTERN = '^[a-z0-9][a-z0-9-]{0,62}$';

export interface VmParams {
  workshopID: string;
  seatID: string;
}

export function vmParamsSchema() {
  return {
    type: 'object',
    required: ['workshopID', 'seatID'],
    properties: {
      workshopID: { type: 'string', pattern: WORKSHOP_ID_PATTERN },
      // Path params arrive as text: digits only, range checked in seatFromParam.
      seatID: { type: 'string', pattern: '^[0-9]{1,6}$' },
    },
    additionalProperties: true,
  } as const;
}

/** A seat from a path segment: digits only (Number() alone would read "1e0", "0x1" or "1.0" as 1). */
export function seatFromParam(text: string, maxSeat: number): number {
  const seat = /^[0-9]{1,6}$/.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(seat) || seat < 1 || seat > maxSeat) {
    throw new ApiError(400, 'invalid_field', `seatID must be an integer from 1 to ${maxSeat}`);
  }
  return seat;
}

/** A workshop id from a raw (still percent-encoded) path segment; throws invalid_field. */
export function workshopFromRawParam(raw: string): string {
  let workshopId: string;
  try {
    workshopId = decodeURIComponent(raw);
  } catch {
    workshopId = '';
  }
  if (!new RegExp(WORKSHOP_ID_PATTERN).test(workshopId)) {
    throw new ApiError(400, 'invalid_field', 'workshopID must be 1-63 of a-z, 0-9 and "-"');
  }
  return workshopId;
}

/** A seat from a raw (still percent-encoded) path segment; throws invalid_field. */
export function seatFromRawParam(raw: string, maxSeat: number): number {
  let text: string;
  try {
    text = decodeURIComponent(raw);
  } catch {
    text = '';
  }
  return seatFromParam(text, maxSeat);
}
