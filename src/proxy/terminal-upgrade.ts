// The terminal's WebSocket upgrade, `/proxy/{workshopID}/{seatID}/terminal`: authorized by the
// caller's check, the seat looked up, then handed to the TerminalProxy. Refusals are the same
// `{ error, code }` answers, from the same error mapping, as the HTTP routes give.
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { REQUEST_ID_HEADER, requestIdFrom } from '../http/request-id.ts';
import { ApiError, toApiError, writeErrorToSocket, type ErrorObserver } from '../http/errors.ts';
import { seatFromRawParam, workshopFromRawParam } from '../http/seat.ts';
import type { SeatLookup } from './seats.ts';
import type { TerminalProxy } from './terminal.ts';

const TERMINAL_PATH = /^\/proxy\/([^/?]+)\/([^/?]+)\/terminal$/;

export interface TerminalUpgradeOptions {
  readonly seats: SeatLookup;
  readonly maxSeat: number;
  readonly terminals: TerminalProxy;
  readonly log: Logger;
  /** Who is asking, for the log; throws an ApiError (401, 403) when they may not. */
  readonly authorize: (request: IncomingMessage, url: URL) => Promise<string>;
  /** Told of every refusal sent (metrics). */
  readonly errorSent?: ErrorObserver;
}

export function createTerminalUpgrade(o: TerminalUpgradeOptions): (request: IncomingMessage, socket: Duplex, head: Buffer) => void {
  return (request, socket, head) => {
    const requestId = requestIdFrom(request.headers[REQUEST_ID_HEADER]);
    const log = o.log.child({ reqId: requestId });
    void upgrade(o, { request, socket, head, requestId, log }).catch((error: unknown) => {
      if (toApiError(error).statusCode >= 500) log.error({ err: error }, 'terminal upgrade failed');
      writeErrorToSocket(socket, error, { observe: o.errorSent, requestId });
    });
  };
}

/** One upgrade request, with its id and the logger whose lines carry it. */
interface Upgrade {
  readonly request: IncomingMessage;
  readonly socket: Duplex;
  readonly head: Buffer;
  readonly requestId: string;
  readonly log: Logger;
}

async function upgrade(o: TerminalUpgradeOptions, { request, socket, head, requestId, log }: Upgrade): Promise<void> {
  let url: URL;
  try {
    url = new URL(request.url ?? '/', 'http://agent');
  } catch {
    throw new ApiError(400, 'invalid_request', 'the request target is not a valid URL');
  }
  const match = TERMINAL_PATH.exec(url.pathname);
  if (!match) throw new ApiError(404, 'not_found', 'WebSocket is served at /proxy/{workshopID}/{seatID}/terminal');
  const actor = await o.authorize(request, url);
  const workshopId = workshopFromRawParam(match[1] ?? '');
  const seat = seatFromRawParam(match[2] ?? '', o.maxSeat);
  const vm = o.seats.get(workshopId, seat);
  url.searchParams.delete('token'); // a learner token is for the agent, never for the guest
  log.info({ vm: `${workshopId}.${seat}`, actor }, 'terminal connection');
  o.terminals.handle(request, socket, head, vm.ip, url.searchParams, requestId);
}
