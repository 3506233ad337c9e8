// The agent's HTTP server: one Fastify app, auth in one hook, errors in one handler, one plugin
// per route group. WebSocket upgrades (the terminal proxy) are routed here too.
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { bearerToken, tokenMatches } from './auth.ts';
import { ApiError, errorHandler, sendError } from './errors.ts';
import { statusRoutes, type StatusRoutesOptions } from './routes/status.ts';
import { vmRoutes, type VmRoutesOptions, seatFromParam } from './routes/vms.ts';
import { proxyRoutes } from '../proxy/routes.ts';
import { rejectUpgrade, TerminalProxy } from '../proxy/terminal.ts';
import { VmError } from '../vms/errors.ts';
import type { GuestHealth } from '../proxy/guest.ts';
import { WORKSHOP_ID_PATTERN } from './schemas.ts';

export interface ApiOptions {
  readonly log: Logger;
  readonly agentToken: string | undefined;
  readonly status: StatusRoutesOptions;
  readonly vms: VmRoutesOptions;
  readonly probe: (ip: string) => Promise<GuestHealth>;
}

const UNAUTHENTICATED = new Set(['/health']);
const TERMINAL_PATH = /^\/proxy\/([^/?]+)\/([^/?]+)\/terminal$/;



export async function buildApi(o: ApiOptions): Promise<FastifyInstance> {
  const logger: FastifyBaseLogger = o.log;
  const app = Fastify({
    loggerInstance: logger,
    bodyLimit: 16 * 1024,
    // Types are what the schema says: "1" is not a seat number.
    ajv: { customOptions: { coerceTypes: false, allErrors: false, removeAdditional: false } },
    routerOptions: { ignoreTrailingSlash: true, maxParamLength: 200 },
  });
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((request, reply) => sendError(reply, new ApiError(404, 'not_found', `no route for ${request.method} ${request.url.split('?')[0]}`)));

  const token = o.agentToken;
  if (token !== undefined) {
    app.addHook('onRequest', async (request, reply) => {
      const path = request.url.split('?')[0] ?? '';
      if (UNAUTHENTICATED.has(path)) return;
      if (!tokenMatches(bearerToken(request.headers.authorization), token)) {
        return sendError(reply, new ApiError(401, 'unauthorized', 'missing or invalid bearer token'));
      }
    });
  }

  await app.register(statusRoutes, o.status);
  await app.register(vmRoutes, o.vms);
  await app.register(proxyRoutes, { manager: o.vms.manager, maxSeat: o.vms.maxSeat, probe: o.probe });

  const terminals = new TerminalProxy();
  app.server.on('upgrade', (request, socket, head) => {
    const url = new URL(request.url ?? '/', 'http://agent');
    const match = TERMINAL_PATH.exec(url.pathname);
    if (!match) return rejectUpgrade(socket, 404, 'not_found', 'WebSocket is served at /proxy/{workshopID}/{seatID}/terminal');
    if (token !== undefined && !tokenMatches(bearerToken(request.headers.authorization), token)) {
      return rejectUpgrade(socket, 401, 'unauthorized', 'missing or invalid bearer token');
    }
    const workshopId = decodeURIComponent(match[1] ?? '');
    if (!new RegExp(WORKSHOP_ID_PATTERN).test(workshopId)) {
      return rejectUpgrade(socket, 400, 'invalid_field', 'workshopID must be 1-63 of a-z, 0-9 and "-"');
    }
    try {
      const seat = seatFromParam(match[2] ?? '', o.vms.maxSeat);
      const vm = o.vms.manager.get(workshopId, seat);
      url.searchParams.delete('token');
      o.log.info({ vm: `${workshopId}.${seat}` }, 'terminal connection');
      terminals.handle(request, socket, head, vm.ip, url.searchParams);
    } catch (error) {
      if (error instanceof ApiError) return rejectUpgrade(socket, error.statusCode, error.code, error.message);
      if (error instanceof VmError) return rejectUpgrade(socket, 404, error.code, error.message);
      return rejectUpgrade(socket, 400, 'invalid_request', 'bad terminal request');
    }
  });
  app.addHook('onClose', async () => terminals.close());
  return app;
}
