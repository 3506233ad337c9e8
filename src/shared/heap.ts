// Heap room for a process that relays bytes (the agent, the workshop server).
import { setFlagsFromString } from 'node:v8';

/** How far above what survived the last full collection V8 lets the old generation grow: 3×. */
export const HEAP_GROWING_PERCENT = 200;

/**
 * Chunks in flight survive a young collection or two and are promoted, a little at a time. V8
 * (Node 20) let the agent's old generation grow to ~1.5× what its last full collection kept (30 of
 * 44 MB); that slack was smaller than the young generation, grown to 16 MB under a relay's load,
 * so every promotion started a full mark-compact: one every ~400 ms while 50 downloads ran, a
 * third of the agent's CPU (46 in 3 rounds of them; `--trace-gc`, `--trace-incremental-marking`).
 * At 3× there were none in 5 rounds, for at most ~60 MB more heap. The flag is read at each
 * collection, so setting it once the process runs takes effect.
 */
export function leaveHeapRoomForRelaying(): void {
  setFlagsFromString(`--heap-growing-percent=${HEAP_GROWING_PERCENT}`);
}
