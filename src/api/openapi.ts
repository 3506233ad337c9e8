// GET /openapi.json: the API described as OpenAPI 3, made by @fastify/swagger from the very
// schemas that validate requests, so the document cannot drift from what the agent accepts.
import type { FastifyInstance } from 'fastify';
import swagger from '@fastify/swagger';
import { vmParamsSchema } from '../http/seat.ts';

const TERMINAL_PATH = '/proxy/{workshopID}/{seatID}/terminal';

/** The terminal is served on the HTTP server's 'upgrade' event, not by a route: described by hand. */
function terminalPathItem() {
  const params = vmParamsSchema().properties;
  return {
    get: {
      summary: "The seat's terminal (WebSocket)",
      description:
        "WebSocket upgrade (`Connection: Upgrade`, `Upgrade: websocket`) to the seat's terminal; frames pass both ways. " +
        'A learner token may come as `?token=` (browsers cannot set headers on WebSockets). Refusals are `{ error, code }`; ' +
        'an unreachable guest closes the socket with 1011.',
      parameters: [
        { name: 'workshopID', in: 'path', required: true, schema: params.workshopID },
        { name: 'seatID', in: 'path', required: true, schema: params.seatID },
      ],
      responses: { '101': { description: 'Switching Protocols: the terminal session' } },
    },
  };
}

/** Registers the generator; routes registered after this are in the document. */
export async function registerOpenApi(app: FastifyInstance, version: string): Promise<void> {
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'ClaraTeach agent', version },
      components: { securitySchemes: { agentToken: { type: 'http', scheme: 'bearer' } } },
      security: [{ agentToken: [] }],
    },
    transformObject: (document) => {
      if (!('openapiObject' in document)) return document.swaggerObject;
      const openapi = document.openapiObject;
      return { ...openapi, paths: { ...openapi.paths, [TERMINAL_PATH]: terminalPathItem() } };
    },
  });
}

export async function openApiRoutes(app: FastifyInstance): Promise<void> {
  app.get('/openapi.json', { schema: { description: 'This document (OpenAPI 3)' } }, async () => app.swagger());
}
