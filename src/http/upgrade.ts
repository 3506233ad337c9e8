// Upgrade requests on the agent's HTTP server: which ask for a WebSocket, and serving the others
// (h2c and the like) as plain HTTP/1.1 instead.
import { ServerResponse, type IncomingMessage, type Server } from 'node:http';
import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { writeRawError, type ErrorObserver } from './errors.ts';

export function wantsWebSocket(request: IncomingMessage): boolean {
  return (request.headers.upgrade ?? '').split(',').some((protocol) => protocol.trim().toLowerCase() === 'websocket');
}

/**
 * Node hands every request with an `Upgrade` header to 'upgrade' listeners, also `Upgrade: h2c`
 * (what `curl --http2` sends). A server may ignore an upgrade it does not offer (RFC 9110 7.8):
 * such a request is served as plain HTTP/1.1 instead. Node's parser has already let go of the
 * connection, so the answer closes it, and a body could not be read: one is refused.
 */
export function serveIgnoringUpgrade(server: Server, request: IncomingMessage, socket: Duplex, observe?: ErrorObserver): void {
  const length = request.headers['content-length'];
  if (request.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')) {
    return writeRawError(
      socket,
      400,
      'invalid_request',
      `a request with a body cannot ask to upgrade to "${request.headers.upgrade ?? ''}"`,
      { observe },
    );
  }
  if (!(socket instanceof Socket)) return writeRawError(socket, 400, 'invalid_request', 'unsupported upgrade', { observe });
  const response = new ServerResponse(request);
  response.shouldKeepAlive = false;
  response.assignSocket(socket);
  response.on('finish', () => {
    response.detachSocket(socket);
    socket.end();
  });
  server.emit('request', request, response);
}
