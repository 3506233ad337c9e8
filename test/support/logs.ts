// A pino logger for tests that collects each line's message, so a test can check what was said.
import pino, { type Logger } from 'pino';

export function capturingLogger(messages: string[]): Logger {
  return pino(
    { level: 'debug' },
    { write: (line: string) => void messages.push(String((JSON.parse(line) as { msg?: unknown }).msg ?? '')) },
  );
}
