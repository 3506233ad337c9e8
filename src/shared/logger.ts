// One pino logger for the agent. Secrets never reach the log: request URLs have `token` masked
// and headers are not logged.
import pino, { type Logger } from 'pino';

interface LoggedRequest {
  method?: string;
  url?: string;
  ip?: string;
}

export function createLogger(level: string): Logger {
  return pino({
    level,
    base: { service: 'clarateach-agent' },
    serializers: {
      req: (req: LoggedRequest) => ({ method: req.method, url: req.url?.replace(/([?&]token=)[^&]*/gi, '$1[redacted]'), remote: req.ip }),
      err: pino.stdSerializers.err,
    },
    redact: { paths: ['authorization', 'headers.authorization', 'token'], censor: '[redacted]' },
  });
}
