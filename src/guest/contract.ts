// What the agent and the guest agree on: the ports the workspace services listen on. The image
// build writes these into the guest (/etc/clarateach/guest.env) for the guest's init to read; the
// agent's proxy and readiness probe use the same numbers. Imports nothing, so both sides may.

export const GUEST_PORTS = { terminal: 3001, files: 3002 } as const;

/** Where the image puts the contract inside the guest's root filesystem. */
export const GUEST_CONTRACT_PATH = '/etc/clarateach/guest.env';

/** The contract as the guest's init reads it: shell variable assignments. */
export function guestContractEnv(): string {
  return `CLARATEACH_TERMINAL_PORT=${GUEST_PORTS.terminal}\nCLARATEACH_FILES_PORT=${GUEST_PORTS.files}\n`;
}

/**
 * Large downloads the agent relays in the kernel (src/proxy/downloads.ts). The agent's GET says
 * `x-clarateach-hold-above: N` and sends a chunked request body it keeps open. A file server that
 * knows this answers a body of N bytes or more with its head only, `Content-Length: 0` and
 * `x-clarateach-held: <the body's length>`, then writes the body on the connection after that head,
 * outside HTTP's framing, as the agent gives credit: each line of the request body (`<bytes>\n`)
 * is the most the body may have sent by then. Meanwhile the agent has sent the client its own head
 * and joined the two sockets; the kernel drops what a guest sends past its credit. The request
 * body's end says the agent has it all: the connection then carries the agent's next request.
 * Older guests ignore the header (and a guest of the first version of this handshake, which
 * marked its answer `x-clarateach-held: 1` with the body inside HTTP's framing, is streamed).
 */
export const HOLD_ABOVE_HEADER = 'x-clarateach-hold-above';
export const HELD_HEADER = 'x-clarateach-held';
