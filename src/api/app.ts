// The agent's HTTP server: one Fastify app, auth in one hook, errors in one handler, one plugin
// per route group, an audit line per control action. WebSocket upgrades go to the terminal proxy
// with the same authentication. Every request has an id (the caller's `X-Request-Id` or a new
// one) that its log lines carry and its answer echoes.
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { actorOf, type Authenticator, type Identity } from './auth.ts';
import type { AuditLog } from './audit.ts';
import { ApiError, errorHandler, observeErrors, sendError, type ErrorObserver } from '../http/errors.ts';
import { createJsonServer } from '../http/json-server.ts';
import { REQUEST_ID_HEADER } from '../http/request-id.ts';
import { statusRoutes, type StatusRoutesOptions } from './routes/status.ts';
import { vmRoutes, type VmRoutesOptions } from './routes/vms.ts';
import { tokenRoutes } from './routes/tokens.ts';
import { workspaceRoutes } from './routes/workspace.ts';
import { templateRoutes } from './routes/templates.ts';
import { metricsRoutes, type MetricsSource } from './routes/metrics.ts';
import { openApiRoutes, registerOpenApi } from './openapi.ts';
import type { SocketJoiner } from '../proxy/downloads.ts';
import { proxyRoutes } from '../proxy/routes.ts';
import { TerminalProxy } from '../proxy/terminal.ts';
import type { ProxyTraffic } from '../proxy/traffic.ts';
import { createTerminalUpgrade } from '../proxy/terminal-upgrade.ts';
import { serveIgnoringUpgrade, wantsWebSocket } from '../http/upgrade.ts';
import type { GuestProbe, ImageCatalog, SnapshotPort } from '../vms/ports.ts';

declare module 'fastify' {
  interface FastifyRequest {
    identity: Identity | null;
  }
}

export interface ApiOptions {
  readonly log: Logger;
  readonly auth: Authenticator;
  readonly audit: AuditLog;
  readonly learnerTokenTtlS: number;
  readonly status: StatusRoutesOptions;
  readonly vms: VmRoutesOptions;
  readonly probe: GuestProbe;
  /** The built learner page (src/learner-page → dist/learner-page). */
  readonly pageDir: string;
  readonly templates: ImageCatalog;
  /** Shown with the templates' builds in GET /templates. */
  readonly snapshots?: SnapshotPort;
  readonly observability: Observability;
  /** Joins sockets for large downloads in the kernel (src/proxy/downloads.ts). */
  readonly joiner?: SocketJoiner;
}

/** Where the API reports what it does (metrics), and what `/metrics` shows. */
export interface Observability {
  readonly metrics: MetricsSource;
  readonly traffic?: ProxyTraffic;
  readonly errorSent?: ErrorObserver;
}

const UNAUTHENTICATED = new Set(['/health']);

function pathOf(url: string): string {
  return url.split('?')[0] ?? '';
}

/**
 * `/health/` is `/health` (the router ignores trailing slashes; the auth check must too). The
 * learner page is static and holds no data: the calls it makes are authenticated.
 */
function isUnauthenticated(path: string): boolean {
  return UNAUTHENTICATED.has(path.replace(/\/+$/, '') || '/') || path.startsWith('/workspace/');
}

function queryToken(url: string): string | undefined {
  const query = url.includes('?') ? url.slice(url.indexOf('?') + 1) : '';
  return new URLSearchParams(query).get('token') ?? undefined;
}

/** Control actions (anything that changes state outside the learners' own workspaces) are audited. */
function isControlAction(method: string, path: string): boolean {
  return method !== 'GET' && method !== 'HEAD' && method !== 'OPTIONS' && !path.startsWith('/proxy/');
}

export async function buildApi(o: ApiOptions): Promise<FastifyInstance> {
  const { metrics, traffic, errorSent } = o.observability;
  const app = createJsonServer({ log: o.log, bodyLimit: 16 * 1024, errorHandler, ...(errorSent ? { observe: errorSent } : {}) });
  app.decorateRequest('identity', null);
  if (errorSent) observeErrors(app, errorSent);
  const vmCreatedAt = (workshopId: string, seatId: number): number | undefined =>
    o.vms.manager.list(workshopId).find((vm) => vm.seatId === seatId)?.createdAt;
  // The first hook: refusals (401, 403) echo the id too.
  app.addHook('onRequest', async (request, reply) => void reply.header(REQUEST_ID_HEADER, request.id));
  addAuthAndAudit(app, o, vmCreatedAt);
  await registerOpenApi(app, o.status.version);
  await app.register(statusRoutes, o.status);
  await app.register(vmRoutes, o.vms);
  await app.register(tokenRoutes, { auth: o.auth, manager: o.vms.manager, maxSeat: o.vms.maxSeat, defaultTtlS: o.learnerTokenTtlS });
  await app.register(templateRoutes, {
    templates: o.templates,
    manager: o.vms.manager,
    ...(o.snapshots ? { snapshots: o.snapshots } : {}),
  });
  await app.register(workspaceRoutes, { pageDir: o.pageDir });
  await app.register(proxyRoutes, {
    seats: o.vms.manager,
    maxSeat: o.vms.maxSeat,
    probe: o.probe,
    ...(traffic ? { traffic } : {}),
    ...(o.joiner ? { joiner: o.joiner } : {}),
  });
  await app.register(metricsRoutes, { source: metrics });
  await app.register(openApiRoutes);
  addTerminalUpgrades(app, o, vmCreatedAt);
  app.addHook('onClose', async () => o.audit.close());
  return app;
}

type CreatedAt = (workshopId: string, seatId: number) => number | undefined;

/** Every request but /health is authenticated; every control action leaves an audit line. */
function addAuthAndAudit(app: FastifyInstance, o: ApiOptions, vmCreatedAt: CreatedAt): void {
  app.addHook('onRequest', async (request, reply) => {
    const path = pathOf(request.url);
    if (isUnauthenticated(path)) return;
    const identity = await o.auth.identify(request.headers.authorization, path.startsWith('/proxy/') ? queryToken(request.url) : undefined);
    if (!identity) return sendError(reply, new ApiError(401, 'unauthorized', 'missing or invalid bearer token'));
    request.identity = identity;
    if (!o.auth.allows(identity, path, vmCreatedAt)) {
      return sendError(reply, new ApiError(403, 'forbidden', 'this token opens only its own seat'));
    }
  });
  app.addHook('onResponse', async (request, reply) => {
    const path = pathOf(request.url);
    if (!isControlAction(request.method, path)) return;
    const status = reply.statusCode;
    o.audit.record(
      {
        actor: actorOf(request.identity),
        action: `${request.method} ${request.routeOptions.url ?? path}`,
        target: path,
        status,
        result: status < 400 ? 'ok' : status === 401 || status === 403 ? 'denied' : 'failed',
        remote: request.ip,
      },
      request.log,
    );
  });
}

/** WebSocket upgrades go to the terminal proxy, authenticated as HTTP requests are; others are served as HTTP/1.1. */
function addTerminalUpgrades(app: FastifyInstance, o: ApiOptions, vmCreatedAt: CreatedAt): void {
  const { traffic, errorSent } = o.observability;
  const terminals = new TerminalProxy(traffic);
  const terminalUpgrade = createTerminalUpgrade({
    seats: o.vms.manager,
    maxSeat: o.vms.maxSeat,
    terminals,
    log: o.log,
    ...(errorSent ? { errorSent } : {}),
    authorize: async (request, url) => {
      const identity = await o.auth.identify(request.headers.authorization, url.searchParams.get('token') ?? undefined);
      if (!identity) throw new ApiError(401, 'unauthorized', 'missing or invalid bearer token');
      if (!o.auth.allows(identity, url.pathname, vmCreatedAt)) throw new ApiError(403, 'forbidden', 'this token opens only its own seat');
      return actorOf(identity);
    },
  });
  app.server.on('upgrade', (request, socket, head) => {
    // Node removes its own error listener before 'upgrade': a client resetting the connection
    // must not become an uncaught exception.
    socket.on('error', () => socket.destroy());
    if (!wantsWebSocket(request)) return serveIgnoringUpgrade(app.server, request, socket, errorSent);
    terminalUpgrade(request, socket, head);
  });
  // Upgraded sockets still count as the HTTP server's connections: end them before it closes.
  app.addHook('preClose', async () => terminals.close());
}
