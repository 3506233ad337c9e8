// The learner's workspace through the server, one entry point: /w/{ws}/{seat}/ is the agent's page
// (/workspace/{ws}/{seat}/ on the owning worker), /proxy/{ws}/{seat}/* its files and health. The
// learner is known by cookie; the server adds the worker's token itself and drops the browser's
// cookies, so neither the worker token reaches the browser nor the learner's cookie the worker.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import replyFrom from '@fastify/reply-from';
import { ApiError, sendError } from '../http/errors.ts';
import type { ServerContext } from './context.ts';
import { seatNumber } from './routes/workshops.ts';
import { SEAT_ID, WORKSHOP_ID, type SeatParams } from './schemas.ts';
import { activityRecorder, seatAccess } from './seat-access.ts';

const METHODS = ['GET', 'HEAD', 'PUT', 'POST', 'DELETE', 'PATCH'] as const;

/** Headers of the browser that are the server's business only. */
const DROPPED_REQUEST_HEADERS = new Set(['cookie', 'authorization', 'expect', 'x-csrf-token', 'host', 'connection', 'keep-alive']);

export async function workspaceProxyRoutes(app: FastifyInstance, c: ServerContext): Promise<void> {
  const recordActivity = activityRecorder(c);
  await app.register(async (proxy) => {
    // Bodies (uploads) pass through as streams, never whole in the server's memory.
    proxy.removeAllContentTypeParsers();
    proxy.addContentTypeParser('*', (_request, payload, done) => done(null, payload));
    await proxy.register(replyFrom, {
      undici: { connections: 32, pipelining: 1, connect: { timeout: 5_000 }, headersTimeout: 60_000, bodyTimeout: 0 },
    });
    const params = {
      type: 'object',
      required: ['workshopID', 'seatID'],
      properties: { workshopID: WORKSHOP_ID, seatID: SEAT_ID, '*': { type: 'string' } },
    } as const;
    const page = forward(c, 'page', recordActivity);
    const files = forward(c, 'files', recordActivity);
    const pageSchema = { params, security: [], description: "The learner's workspace page (the agent's), opened by the learner cookie" };
    proxy.route({ method: ['GET', 'HEAD'], url: '/w/:workshopID/:seatID', schema: pageSchema, handler: page });
    proxy.route({ method: ['GET', 'HEAD'], url: '/w/:workshopID/:seatID/*', schema: pageSchema, handler: page });
    proxy.route({
      method: [...METHODS],
      url: '/proxy/:workshopID/:seatID/*',
      schema: {
        params,
        security: [],
        description: "The seat's files and health on its worker (the agent's /proxy/{ws}/{seat}/*), streamed",
      },
      handler: files,
    });
  });
}

function forward(c: ServerContext, kind: 'page' | 'files', recordActivity: (ws: string, seat: number) => void) {
  return async (request: FastifyRequest<{ Params: SeatParams }>, reply: FastifyReply) => {
    const seatId = seatNumber(request.params.seatID);
    const { workshopID } = request.params;
    const { placed } = await seatAccess(c, request.cookies, workshopID, seatId);
    const rawUrl = request.raw.url ?? '';
    const queryAt = rawUrl.indexOf('?');
    const rawPath = queryAt >= 0 ? rawUrl.slice(0, queryAt) : rawUrl;
    const prefix = kind === 'page' ? `/w/${workshopID}/${request.params.seatID}` : `/proxy/${workshopID}/${request.params.seatID}`;
    if (!rawPath.startsWith(prefix)) throw new ApiError(400, 'invalid_request', 'the path is not a seat path');
    // The rest as the client encoded it: the agent decides what it means (and refuses `..`).
    const rest = rawPath.slice(prefix.length);
    const seatBase = `${placed.worker.url}${kind === 'page' ? '/workspace' : '/proxy'}/${workshopID}/${seatId}`;
    const target = `${seatBase}${rest}`;
    // The request goes on with the worker's token, which opens every route of the agent. A URL
    // parser (the proxy's) reads `\` as `/` and resolves dot segments, also `%2e%2e`: what is
    // sent must still be under this seat's path, or `…/1/a\..\..\..\..\vms` reaches `/vms`.
    if (!staysUnder(seatBase, target)) throw new ApiError(400, 'invalid_request', 'the path leaves the seat');
    const query = new URLSearchParams(queryAt >= 0 ? rawUrl.slice(queryAt + 1) : '');
    query.delete('token');
    c.metrics.proxied.inc({ kind });
    if (kind === 'files') recordActivity(workshopID, seatId);
    const workerToken = placed.worker.token;
    return reply.from(target, {
      queryString: () => query.toString(),
      rewriteRequestHeaders: (_req, headers) => {
        const kept: Record<string, string | string[] | undefined> = {};
        for (const [name, value] of Object.entries(headers)) if (!DROPPED_REQUEST_HEADERS.has(name)) kept[name] = value;
        if (workerToken !== null) kept['authorization'] = `Bearer ${workerToken}`;
        return kept;
      },
      rewriteHeaders: (headers) => {
        const { connection: _connection, 'keep-alive': _keepAlive, 'set-cookie': _setCookie, ...rest } = headers;
        return rest;
      },
      onError: (replyToSend, { error }) => {
        request.log.warn({ err: error, worker: placed.worker.id }, 'worker unreachable');
        sendError(replyToSend, new ApiError(502, 'worker_unreachable', `the seat's worker ${placed.worker.id} did not answer`));
      },
    });
  };
}

/** True when `target`, as a URL parser resolves it, is `base` or below it (same origin, path under base's). */
export function staysUnder(base: string, target: string): boolean {
  let resolved: URL;
  try {
    resolved = new URL(target);
  } catch {
    return false;
  }
  const root = new URL(base);
  const rootPath = root.pathname.replace(/\/+$/, '');
  return resolved.origin === root.origin && (resolved.pathname === rootPath || resolved.pathname.startsWith(`${rootPath}/`));
}
