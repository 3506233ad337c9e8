// Request ids: the caller's `X-Request-Id` when it is a plausible id, else a new one. Every log
// line a request causes carries it, and the answer echoes it.
import { randomUUID } from 'node:crypto';

export const REQUEST_ID_HEADER = 'x-request-id';

const REQUEST_ID = /^[A-Za-z0-9._-]{1,128}$/;

/** The incoming header's id if it is 1-128 of [A-Za-z0-9._-] (nothing that could forge a log line), else a fresh UUID. */
export function requestIdFrom(header: string | string[] | undefined): string {
  return typeof header === 'string' && REQUEST_ID.test(header) ? header : randomUUID();
}
