// One pino logger for the agent and the server. Secrets never reach the log: request URLs have
// `token` and `setup` (the server's sign-up code) masked and headers are not logged.
import pino, { type DestinationStream, type Logger } from 'pino';

interface LoggedRequest {
  method?: string;
  url?: string;
  ip?: string;
}

const SECRET_PARAMETERS = new Set(['token', 'setup']);

/** The URL with the value of every query parameter whose decoded name is `token` or `setup` masked. */
export function redactUrl(url: string): string {
  const at = url.indexOf('?');
  if (at < 0) return url;
  const query = url
    .slice(at + 1)
    .split('&')
    .map((pair) => {
      const eq = pair.indexOf('=');
      const name = eq < 0 ? pair : pair.slice(0, eq);
      let decoded: string;
      try {
        decoded = decodeURIComponent(name.replace(/\+/g, ' '));
      } catch {
        decoded = name;
      }
      return SECRET_PARAMETERS.has(decoded.trim().toLowerCase()) ? `${name}=[redacted]` : pair;
    })
    .join('&');
  return `${url.slice(0, at)}?${query}`;
}

/** How a request and its answer appear in log lines: no headers, no token. */
export const requestSerializers = {
  req: (req: LoggedRequest) => ({ method: req.method, url: req.url === undefined ? undefined : redactUrl(req.url), remote: req.ip }),
  res: (res: { statusCode?: number }) => ({ statusCode: res.statusCode }),
};

/** JSON lines on stdout, or on `destination` (a test reading what an operator would read). */
export function createLogger(
  level: string,
  service: 'clarateach-agent' | 'clarateach-server' = 'clarateach-agent',
  destination?: DestinationStream,
): Logger {
  const options = {
    level,
    base: { service },
    serializers: { ...requestSerializers, err: pino.stdSerializers.err },
    redact: { paths: ['authorization', 'headers.authorization', 'token'], censor: '[redacted]' },
  };
  return destination === undefined ? pino(options) : pino(options, destination);
}
