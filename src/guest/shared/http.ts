// Small helpers shared by the two guest HTTP servers.
import type { Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const payload = Buffer.from(JSON.stringify(body));
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(status, {
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': String(payload.length),
    'Cache-Control': 'no-store',
    ...headers,
  });
  res.end(res.req.method === 'HEAD' ? undefined : payload);
}

/** Splits a raw request target into its undecoded path and its query, without URL normalisation (which would hide `..`). */
export function splitTarget(target: string | undefined): { rawPath: string; query: URLSearchParams } {
  const t = target ?? '/';
  const q = t.indexOf('?');
  return q === -1 ? { rawPath: t, query: new URLSearchParams() } : { rawPath: t.slice(0, q), query: new URLSearchParams(t.slice(q + 1)) };
}

/** Listens, rejecting on a bind error; later server errors are logged. Resolves with the bound port. */
export async function listen(server: Server, port: number, host: string, onError: (err: Error) => void): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', onError);
  return (server.address() as AddressInfo).port;
}
