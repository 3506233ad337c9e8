// One JSON object per line on stdout; the guest init forwards stdout to the VM console.
export type LogFields = Record<string, unknown>;
export type LogLevel = 'info' | 'warn' | 'error' | 'fatal';

export interface Logger {
  info(event: string, fields?: LogFields): void;
  warn(event: string, fields?: LogFields): void;
  error(event: string, fields?: LogFields): void;
  fatal(event: string, fields?: LogFields): void;
}

/** Turns an unknown thrown value into something JSON-friendly for the log (never for HTTP responses). */
export function describeError(err: unknown): LogFields {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    return { message: err.message, ...(code === undefined ? {} : { code }), stack: err.stack };
  }
  return { message: String(err) };
}

export function createLogger(service: string, write: (line: string) => void = (line) => process.stdout.write(line)): Logger {
  const emit = (level: LogLevel, event: string, fields?: LogFields): void => {
    let line: string;
    try {
      line = JSON.stringify({ time: new Date().toISOString(), level, service, event, ...fields });
    } catch {
      line = JSON.stringify({ time: new Date().toISOString(), level, service, event, note: 'unserializable fields' });
    }
    write(`${line}\n`);
  };
  return {
    info: (event, fields) => emit('info', event, fields),
    warn: (event, fields) => emit('warn', event, fields),
    error: (event, fields) => emit('error', event, fields),
    fatal: (event, fields) => emit('fatal', event, fields),
  };
}

export const silentLogger: Logger = { info: () => {}, warn: () => {}, error: () => {}, fatal: () => {} };
