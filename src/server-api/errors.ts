// The server's refusals in the one error shape of src/http/errors.ts: each domain error code maps
// to one HTTP status, here and nowhere else.
import type { FastifyReply, FastifyRequest } from 'fastify';
import { ApiError, errorHandler } from '../http/errors.ts';
import { WorkshopError, type WorkshopErrorCode } from '../workshops/model.ts';

const STATUS: Record<WorkshopErrorCode, number> = {
  workshop_not_found: 404,
  seat_not_found: 404,
  worker_not_found: 404,
  worker_exists: 409,
  worker_in_use: 409,
  instructor_exists: 409,
  invalid_setup_code: 401,
  already_set_up: 409,
  invalid_code: 404,
  workshop_ended: 410,
  workshop_full: 409,
  no_capacity: 503,
  invalid_field: 400,
  // 502 as the workspace and terminal proxies answer it: the worker behind the server failed.
  worker_unreachable: 502,
  vm_not_found: 404,
  worker_error: 502,
};

export function fromDomain(error: unknown): unknown {
  return error instanceof WorkshopError ? new ApiError(STATUS[error.code], error.code, error.message) : error;
}

export function serverErrorHandler(error: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  return errorHandler(fromDomain(error), request, reply);
}

export { ApiError };
