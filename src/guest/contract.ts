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
