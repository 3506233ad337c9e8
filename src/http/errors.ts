// The one error shape of the agent's HTTP answers, `{ error, code }`, made here and nowhere else:
// for Fastify replies and for raw sockets (refused upgrades), from one mapping of domain errors.
import type { Duplex } from 'node:stream';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { VmError, type VmErrorCode } from '../vms/errors.ts';

/** Told of every `{ error, code }` answer sent (metrics). */
export type ErrorObserver = (statusCode: number, code: string) => void;

declare module 'fastify' {
  interface FastifyInstance {
    /** Set by `observeErrors`; every error answer of this server is reported to it. */
    errorSent?: ErrorObserver;
  }
}

/** Reports every error answer `app` (and its plugins) sends; call before registering routes. */
export function observeErrors(app: FastifyInstance, observer: ErrorObserver): void {
  app.decorate('errorSent', observer);
}

export class ApiError extends Error {
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

const VM_ERROR_STATUS: Record<VmErrorCode, number> = {
  vm_not_found: 404,
  template_not_found: 404,
  template_building: 503,
  vm_exists: 409,
  at_capacity: 503,
  insufficient_memory: 503,
  create_failed: 500,
  delete_failed: 500,
  vm_busy: 409,
  start_failed: 500,
  invalid_field: 400,
};

interface ValidationIssue {
  keyword: string;
  instancePath: string;
  params: Record<string, unknown>;
  message?: string;
}

function fieldOf(issue: ValidationIssue): string {
  const path = issue.instancePath.replace(/^\//, '').replace(/\//g, '.');
  return path;
}

/** Turns a schema validation failure into missing_field / invalid_field with the field named. */
function validationError(issues: readonly ValidationIssue[], context: string | undefined): ApiError {
  const issue = issues[0];
  if (!issue) return new ApiError(400, 'invalid_field', 'invalid request');
  if (issue.keyword === 'required') {
    const field = String(issue.params['missingProperty'] ?? '');
    return new ApiError(400, 'missing_field', `${field} is required`);
  }
  if (issue.keyword === 'additionalProperties') {
    const field = String(issue.params['additionalProperty'] ?? '');
    return new ApiError(400, 'invalid_field', `unknown field "${field}"`);
  }
  const field = fieldOf(issue) || context || 'body';
  if (issue.keyword === 'type' && issue.instancePath === '') {
    return new ApiError(400, 'invalid_field', `${context ?? 'body'} must be a JSON object`);
  }
  return new ApiError(400, 'invalid_field', `${field} ${issue.message ?? 'is invalid'}`);
}

export function toApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  if (error instanceof VmError) return new ApiError(VM_ERROR_STATUS[error.code], error.code, error.message);
  const fastifyError = error as Partial<FastifyError> & { validation?: ValidationIssue[]; validationContext?: string };
  if (fastifyError.validation) return validationError(fastifyError.validation, fastifyError.validationContext);
  switch (fastifyError.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new ApiError(400, 'invalid_json', fastifyError.message ?? 'body is not valid JSON');
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ApiError(413, 'body_too_large', 'request body is too large');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ApiError(415, 'unsupported_media_type', 'send the body as application/json');
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new ApiError(400, 'invalid_request', 'Content-Length does not match the body');
  }
  if (error instanceof SyntaxError) return new ApiError(400, 'invalid_json', error.message);
  const status = fastifyError.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    return new ApiError(status, 'invalid_request', fastifyError.message ?? 'invalid request');
  }
  return new ApiError(500, 'internal', 'internal error');
}

/** Any Fastify reply (reply-from hands its error hook a differently typed one). */
interface ReplyLike<R> {
  code(statusCode: number): R;
  readonly server?: { readonly errorSent?: ErrorObserver | undefined };
}
interface Sendable<R> {
  type(contentType: string): { send(payload: unknown): R };
}

export function sendError<R extends ReplyLike<R> & Sendable<R>>(reply: R, error: ApiError): R {
  reply.server?.errorSent?.(error.statusCode, error.code);
  return reply.code(error.statusCode).type('application/json').send({ error: error.message, code: error.code });
}

export function errorHandler(error: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const apiError = toApiError(error);
  if (apiError.statusCode >= 500) request.log.error({ err: error }, 'request failed');
  return sendError(reply, apiError);
}

const REASONS: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  409: 'Conflict',
  413: 'Content Too Large',
  415: 'Unsupported Media Type',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
};

/** Who hears of a raw error answer, and the request id it echoes. */
export interface RawErrorContext {
  readonly observe?: ErrorObserver | undefined;
  readonly requestId?: string | undefined;
}

/** Any error, mapped as for an HTTP reply, written to a socket that has no Fastify reply. */
export function writeErrorToSocket(socket: Duplex, error: unknown, context: RawErrorContext = {}): void {
  const apiError = toApiError(error);
  writeRawError(socket, apiError.statusCode, apiError.code, apiError.message, context);
}

/**
 * The same `{ error, code }` answer written straight to a socket, where no Fastify reply exists:
 * refused WebSocket upgrades and requests that are not valid HTTP.
 */
export function writeRawError(socket: Duplex, status: number, code: string, message: string, context: RawErrorContext = {}): void {
  context.observe?.(status, code);
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  const body = JSON.stringify({ error: message, code });
  // The id was checked (requestIdFrom): it cannot break the header block.
  const requestIdLine = context.requestId === undefined ? '' : `x-request-id: ${context.requestId}\r\n`;
  socket.end(
    `HTTP/1.1 ${status} ${REASONS[status] ?? 'Error'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n${requestIdLine}Connection: close\r\n\r\n${body}`,
  );
}
