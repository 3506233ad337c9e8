// The workshop server's HTTP server: one Fastify app (src/http/json-server.ts) with cookies, rate limits on joins and logins,
// one error shape, request ids, one plugin per route group, the OpenAPI document, metrics, the
// workspace proxy and the terminal WebSocket proxy on the same port.
import type { FastifyInstance } from 'fastify';
import cookie from '@fastify/cookie';
import rateLimit from '@fastify/rate-limit';
import swagger from '@fastify/swagger';
import type { Logger } from 'pino';
import { ApiError, observeErrors } from '../http/errors.ts';
import { createJsonServer } from '../http/json-server.ts';
import { REQUEST_ID_HEADER } from '../http/request-id.ts';
import { serveIgnoringUpgrade, wantsWebSocket } from '../http/upgrade.ts';
import { CSRF_HEADER, LEARNER_COOKIE, SESSION_COOKIE } from './auth.ts';
import type { ServerContext } from './context.ts';
import { serverErrorHandler } from './errors.ts';
import { joinRoutes } from './routes/join.ts';
import { sessionRoutes } from './routes/session.ts';
import { setupRoutes } from './routes/setup.ts';
import { workerRoutes } from './routes/workers.ts';
import { workshopRoutes } from './routes/workshops.ts';
import { pageRoutes } from './pages.ts';
import { createTerminalProxy } from './terminal-proxy.ts';
import { workspaceProxyRoutes } from './workspace-proxy.ts';

export interface ServerAppOptions {
  readonly log: Logger;
  readonly version: string;
  readonly trustProxy: boolean;
  readonly context: ServerContext;
  /** The Vite build of the server's pages (src/server-pages). */
  readonly pagesDir: string;
  /** How often an open terminal refreshes its seat's last activity (default TERMINAL_ACTIVITY_INTERVAL_MS; tests shorten it). */
  readonly terminalActivityIntervalMs?: number;
}

const TERMINAL_PATH = '/proxy/{workshopID}/{seatID}/terminal';
const TERMINAL_SECURITY: Record<string, string[]>[] = [{ learner: [] }, { session: [] }];

export async function buildServerApp(o: ServerAppOptions): Promise<FastifyInstance> {
  const c = o.context;
  const observe = (status: number, code: string): void => void c.metrics.errors.inc({ status, code });
  const app = createJsonServer({
    log: o.log,
    bodyLimit: 64 * 1024,
    errorHandler: serverErrorHandler,
    observe,
    trustProxy: o.trustProxy,
    jsonOnly: true,
  });
  observeErrors(app, observe);
  app.addHook('onRequest', async (request, reply) => void reply.header(REQUEST_ID_HEADER, request.id));
  // Browsers cache nothing of the API: answers hold seats, codes and tokens.
  app.addHook('onSend', async (request, reply) => {
    if (request.url.startsWith('/api/')) reply.header('cache-control', 'no-store');
  });
  await app.register(cookie);
  await app.register(rateLimit, {
    global: false,
    errorResponseBuilder: (_request, context) => new ApiError(429, 'rate_limited', `too many attempts; try again in ${context.after}`),
  });
  await registerOpenApi(app, o.version);

  app.get(
    '/health',
    { schema: { security: [], response: { 200: { type: 'object', properties: { status: { type: 'string' } } } } } },
    async () => ({
      status: 'healthy',
    }),
  );
  app.get(
    '/metrics',
    { schema: { security: [], description: 'Prometheus metrics, prefix `clarateach_server_`' } },
    async (_request, reply) => reply.type(c.metrics.registry.contentType).send(await c.metrics.registry.metrics()),
  );
  await app.register(sessionRoutes, c);
  await app.register(setupRoutes, c);
  await app.register(workerRoutes, c);
  await app.register(workshopRoutes, c);
  await app.register(joinRoutes, c);
  await app.register(workspaceProxyRoutes, c);
  await app.register(pageRoutes, { pagesDir: o.pagesDir });
  app.get('/openapi.json', { schema: { security: [], description: 'This document (OpenAPI 3)' } }, async () => app.swagger());

  const terminals = createTerminalProxy(c, (header) => app.parseCookie(header), o.terminalActivityIntervalMs);
  app.server.on('upgrade', (request, socket, head) => {
    socket.on('error', () => socket.destroy());
    if (!wantsWebSocket(request)) return serveIgnoringUpgrade(app.server, request, socket, observe);
    terminals.handle(request, socket, head);
  });
  app.addHook('preClose', async () => terminals.close());
  return app;
}

async function registerOpenApi(app: FastifyInstance, version: string): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'ClaraTeach workshop server',
        version,
        description:
          `Instructors: the \`${SESSION_COOKIE}\` cookie from POST /api/login (state-changing requests also send the session's CSRF token in \`${CSRF_HEADER}\`), ` +
          `or \`Authorization: Bearer\` with a session token (\`"bearer": true\` at login). Learners: the \`${LEARNER_COOKIE}\` cookie from POST /api/join.`,
      },
      components: {
        securitySchemes: {
          session: { type: 'apiKey', in: 'cookie', name: SESSION_COOKIE },
          bearer: { type: 'http', scheme: 'bearer' },
          learner: { type: 'apiKey', in: 'cookie', name: LEARNER_COOKIE },
        },
      },
      security: [{ session: [] }, { bearer: [] }],
    },
    transformObject: (document) => {
      if (!('openapiObject' in document)) return document.swaggerObject;
      const openapi = document.openapiObject;
      const terminal = {
        get: {
          summary: "The seat's terminal (WebSocket), proxied to its worker",
          description:
            'WebSocket upgrade; the learner (or instructor) cookie opens it, from a page of this server (Origin). Refusals are `{ error, code }`.',
          security: TERMINAL_SECURITY,
          parameters: [
            { name: 'workshopID', in: 'path', required: true, schema: { type: 'string' } },
            { name: 'seatID', in: 'path', required: true, schema: { type: 'string' } },
          ],
          responses: { '101': { description: 'Switching Protocols: the terminal session' } },
        },
      };
      return { ...openapi, paths: { ...openapi.paths, [TERMINAL_PATH]: terminal } };
    },
  });
}
