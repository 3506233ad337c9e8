// Wire protocol of the terminal WebSocket (JSON text frames).
//
// client -> server
//   {"type":"input","data":string}           keystrokes / paste, written to the PTY as-is
//   {"type":"resize","cols":int,"rows":int}  1..MAX_DIMENSION each
// server -> client
//   {"type":"session","id":string,"replayed_bytes":int}  always the first frame
//   {"type":"output","data":string}          PTY output (replay first, then live)
//   {"type":"exit","code":int}               shell ended; the socket is then closed with 1000
//   {"type":"error","message":string}        a frame was rejected (or the connection is refused)

export const MAX_DIMENSION = 1000;
export const SESSION_ID_RE = /^[A-Za-z0-9_-]{1,64}$/;

export type ClientFrame = { type: 'input'; data: string } | { type: 'resize'; cols: number; rows: number };

export type ServerFrame =
  | { type: 'session'; id: string; replayed_bytes: number }
  | { type: 'output'; data: string }
  | { type: 'exit'; code: number }
  | { type: 'error'; message: string };

export type ParseResult = { ok: true; frame: ClientFrame } | { ok: false; message: string };

export function isDimension(value: unknown): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= MAX_DIMENSION;
}

export function parseClientFrame(text: string): ParseResult {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { ok: false, message: 'frame is not valid JSON' };
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    return { ok: false, message: 'frame must be a JSON object' };
  }
  const frame = value as Record<string, unknown>;
  switch (frame.type) {
    case 'input':
      if (typeof frame.data !== 'string') return { ok: false, message: 'input frame needs a string "data"' };
      return { ok: true, frame: { type: 'input', data: frame.data } };
    case 'resize':
      if (!isDimension(frame.cols) || !isDimension(frame.rows)) {
        return { ok: false, message: `resize frame needs integer "cols" and "rows" between 1 and ${MAX_DIMENSION}` };
      }
      return { ok: true, frame: { type: 'resize', cols: frame.cols, rows: frame.rows } };
    default:
      return { ok: false, message: `unknown frame type ${JSON.stringify(typeof frame.type === 'string' ? frame.type : null)}` };
  }
}

/** Parses an optional ?cols / ?rows query value; undefined when absent, null when invalid. */
export function parseDimensionParam(value: string | null): number | undefined | null {
  if (value === null || value === '') return undefined;
  if (!/^\d{1,4}$/.test(value)) return null;
  const n = Number(value);
  return isDimension(n) ? n : null;
}
