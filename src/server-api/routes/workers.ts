// /api/workers: an operator registers, lists and removes workers. A new worker is polled at once,
// so it is up (and gets seats) as soon as its agent answers. Tokens are kept, never shown.
import type { FastifyInstance } from 'fastify';
import { pollWorker } from '../../workshops/worker-monitor.ts';
import { actorOfInstructor } from '../auth.ts';
import type { ServerContext } from '../context.ts';
import { NO_CONTROL_CHARACTERS, WORKER_ID, errorReply, workerJson, workerReply } from '../schemas.ts';

interface AddWorkerBody {
  url: string;
  token?: string;
  id?: string;
  memory_mb?: number;
}

/** http(s)://host[:port] with no path, query or credentials: the agent's base URL. */
export function workerIdFromUrl(url: URL): string {
  return `${url.hostname}-${url.port || (url.protocol === 'https:' ? '443' : '80')}`
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/^-+/, '')
    .slice(0, 63);
}

export async function workerRoutes(app: FastifyInstance, c: ServerContext): Promise<void> {
  const monitor = { repo: c.repo, workers: c.workers, clock: c.clock, downAfterFailures: c.workerDownAfter };

  app.get(
    '/api/workers',
    { schema: { response: { 200: { type: 'object', properties: { workers: { type: 'array', items: workerReply } } } } } },
    async (request) => {
      await c.auth.requireInstructor(request);
      return { workers: (await c.repo.listWorkers()).map(workerJson) };
    },
  );

  app.post<{ Body: AddWorkerBody }>(
    '/api/workers',
    {
      schema: {
        body: {
          type: 'object',
          required: ['url'],
          additionalProperties: false,
          properties: {
            url: { type: 'string', minLength: 8, maxLength: 300, pattern: '^https?://' },
            token: { type: 'string', minLength: 8, maxLength: 500, pattern: NO_CONTROL_CHARACTERS },
            id: WORKER_ID,
            memory_mb: { type: 'integer', minimum: 128, maximum: 16_777_216 },
          },
        },
        response: { 201: workerReply, 400: errorReply, 409: errorReply },
      },
    },
    async (request, reply) => {
      const identity = await c.auth.requireInstructor(request);
      let url: URL;
      try {
        url = new URL(request.body.url);
      } catch {
        url = new URL('invalid:');
      }
      if (
        (url.protocol !== 'http:' && url.protocol !== 'https:') ||
        url.username !== '' ||
        url.password !== '' ||
        url.search !== '' ||
        url.hash !== '' ||
        url.pathname !== '/'
      ) {
        return reply.code(400).send({ error: 'url must be http(s)://host[:port] with nothing after it', code: 'invalid_field' });
      }
      const base = `${url.protocol}//${url.host}`;
      const added = await c.repo.addWorker({
        id: request.body.id ?? workerIdFromUrl(url),
        url: base,
        token: request.body.token ?? null,
        memoryMb: request.body.memory_mb ?? null,
      });
      await c.repo.audit(
        { actor: actorOfInstructor(identity), action: 'worker.add', target: added.id, workshopId: null, detail: base },
        c.clock.now(),
      );
      const polled = await pollWorker(monitor, added);
      return reply.code(201).send(workerJson(polled));
    },
  );

  app.delete<{ Params: { workerID: string } }>(
    '/api/workers/:workerID',
    {
      schema: {
        params: { type: 'object', required: ['workerID'], properties: { workerID: WORKER_ID } },
        response: { 204: { type: 'null' } },
      },
    },
    async (request, reply) => {
      const identity = await c.auth.requireInstructor(request);
      await c.repo.removeWorker(request.params.workerID);
      await c.repo.audit(
        { actor: actorOfInstructor(identity), action: 'worker.remove', target: request.params.workerID, workshopId: null },
        c.clock.now(),
      );
      return reply.code(204).send();
    },
  );
}
