// A Fastify instance with the one error shape for every failure, also for requests that are not
// valid HTTP, request ids, logs without headers or tokens, and JSON bodies (an empty one is no
// body, not an error). The agent's API and the workshop server's are both made with it.
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { requestSerializers } from '../shared/logger.ts';
import { ApiError, sendError, writeRawError, type ErrorObserver } from './errors.ts';
import { REQUEST_ID_HEADER, requestIdFrom } from './request-id.ts';

export interface JsonServerOptions {
  readonly log: Logger;
  readonly bodyLimit: number;
  /** Turns any thrown error into the error shape (errors.ts's errorHandler, or one mapping domain errors first). */
  readonly errorHandler: (error: unknown, request: FastifyRequest, reply: FastifyReply) => FastifyReply;
  readonly observe?: ErrorObserver;
  readonly trustProxy?: boolean;
  /** Only JSON bodies: any other content type (a form another site posts) gets 415 before any route runs. */
  readonly jsonOnly?: boolean;
}

export function createJsonServer(o: JsonServerOptions): FastifyInstance {
  const logger: FastifyBaseLogger = o.log;
  const handler = o.errorHandler as (error: FastifyError, request: FastifyRequest, reply: FastifyReply) => FastifyReply;
  const app = Fastify({
    loggerInstance: logger,
    trustProxy: o.trustProxy ?? false,
    genReqId: (request) => requestIdFrom(request.headers[REQUEST_ID_HEADER]),
    // A request's lines never show its headers or a `?token=`, whichever logger was given.
    childLoggerFactory: (parent, bindings, options) =>
      parent.child(bindings, { ...options, serializers: { ...options.serializers, ...requestSerializers } }),
    bodyLimit: o.bodyLimit,
    // Types are what the schema says: "1" is not a seat number.
    ajv: { customOptions: { coerceTypes: false, allErrors: false, removeAdditional: false } },
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 200 },
    // Malformed percent-encoding and overlong path parameters get the one error shape too.
    frameworkErrors: handler,
    // Requests that are not valid HTTP (or whose headers are too large) still get { error, code }.
    clientErrorHandler: (error, socket) => {
      // An answer under way on this connection (a download's body, perhaps relayed in the kernel):
      // an error written now would land inside it. Node's own handler does the same.
      if ((socket as { _httpMessage?: { headersSent?: boolean } | null })._httpMessage?.headersSent) return void socket.destroy();
      if ((error as { code?: string }).code === 'HPE_HEADER_OVERFLOW')
        writeRawError(socket, 431, 'headers_too_large', 'request headers are too large', { observe: o.observe });
      else writeRawError(socket, 400, 'invalid_request', 'malformed HTTP request', { observe: o.observe });
    },
  });
  app.setErrorHandler(handler);
  app.setNotFoundHandler((request, reply) =>
    sendError(reply, new ApiError(404, 'not_found', `no route for ${request.method} ${request.url.split('?')[0]}`)),
  );
  if (o.jsonOnly) app.removeAllContentTypeParsers();
  // Many clients send `Content-Type: application/json` with an empty DELETE or POST: no body, not an error.
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') return done(null, undefined);
    try {
      done(null, JSON.parse(text));
    } catch (error) {
      done(new ApiError(400, 'invalid_json', `body is not valid JSON: ${(error as Error).message}`), undefined);
    }
  });
  return app;
}
