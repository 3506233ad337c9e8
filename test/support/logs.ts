// Pino loggers for tests that collect what was logged (each line's message, or whole lines), so a
// test can check what was said.
import pino, { type Logger } from 'pino';

export function capturingLogger(messages: string[]): Logger {
  return pino(
    { level: 'debug' },
    { write: (line: string) => void messages.push(String((JSON.parse(line) as { msg?: unknown }).msg ?? '')) },
  );
}

/** A logger that keeps every line whole, as written (JSON text), so a test can check any field. */
export function capturingLines(lines: string[]): Logger {
  return pino({ level: 'debug' }, { write: (line: string) => void lines.push(line) });
}
