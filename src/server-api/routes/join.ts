// Learners: POST /api/join {code, name} gives a seat (the same one again with the learner cookie),
// POST /api/rejoin {token} brings a learner back on another browser, GET /api/me shows their seat.
// The answer names the workspace on this server; a learner sees only their own seat.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { seatStatus, type Learner, type Seat, type Workshop } from '../../workshops/model.ts';
import { JOIN_CODE_ALPHABET } from '../../workshops/codes.ts';
import { ApiError } from '../errors.ts';
import { LEARNER_COOKIE, ServerAuth, cookieOptions } from '../auth.ts';
import type { ServerContext } from '../context.ts';
import { errorReply, seatReply, workspacePath } from '../schemas.ts';

/** Something besides spaces, and no control characters (PostgreSQL's text refuses NUL). */
const LEARNER_NAME = '^[^\\p{Cc}]*[^\\p{Cc}\\s][^\\p{Cc}]*$';

const learnerSeatReply = {
  type: 'object',
  required: ['workshop', 'seat', 'learner', 'workspace_url'],
  properties: {
    workshop: {
      type: 'object',
      properties: {
        id: { type: 'string' },
        name: { type: 'string' },
        ends_at: { type: 'string', format: 'date-time' },
        state: { type: 'string' },
      },
    },
    seat: { type: 'object', properties: { seat_id: seatReply.properties.seat_id, state: seatReply.properties.state } },
    learner: { type: 'object', properties: { id: { type: 'string' }, name: { type: 'string' } } },
    workspace_url: { type: 'string', description: 'the workspace page on this server, opened by the learner cookie' },
    rejoin_token: {
      type: 'string',
      description: 'only on the first join: brings the learner back to this seat (POST /api/rejoin), keep it private',
    },
  },
} as const;

export async function joinRoutes(app: FastifyInstance, c: ServerContext): Promise<void> {
  const rateLimit = { max: c.joinRateLimit, timeWindow: '1 minute' };
  const answer = (workshop: Workshop, learner: Learner, seat: Seat, rejoinToken?: string) => ({
    workshop: { id: workshop.id, name: workshop.name, ends_at: new Date(workshop.endsAt).toISOString(), state: workshop.state },
    seat: { seat_id: seat.seatId, state: seatStatus(seat, workshop.idleTimeoutS, c.clock.now()) },
    learner: { id: learner.id, name: learner.name },
    workspace_url: workspacePath(workshop.id, seat.seatId),
    ...(rejoinToken === undefined ? {} : { rejoin_token: rejoinToken }),
  });
  const keep = (request: FastifyRequest, reply: FastifyReply, token: string, workshop: Workshop): void => {
    const lifetimeS = Math.max(60, Math.ceil((workshop.endsAt - c.clock.now()) / 1000) + 86_400);
    reply.setCookie(LEARNER_COOKIE, token, cookieOptions(request, c.secureCookies, lifetimeS));
  };

  app.post<{ Body: { code: string; name: string } }>(
    '/api/join',
    {
      config: { rateLimit },
      schema: {
        security: [],
        description: `Join a workshop with its code (8 of ${JOIN_CODE_ALPHABET}; case, spaces and dashes ignored). Sets the learner cookie.`,
        body: {
          type: 'object',
          required: ['code', 'name'],
          additionalProperties: false,
          properties: {
            code: { type: 'string', minLength: 1, maxLength: 32 },
            name: { type: 'string', minLength: 1, maxLength: 100, pattern: LEARNER_NAME },
          },
        },
        response: { 200: learnerSeatReply, 201: learnerSeatReply, 404: errorReply, 409: errorReply, 410: errorReply, 429: errorReply },
      },
    },
    async (request, reply) => {
      try {
        const joined = await c.service.join(request.body.code, request.body.name.trim(), c.auth.learnerToken(request));
        c.metrics.joins.inc({ result: joined.newToken === undefined ? 'returning' : 'new' });
        if (joined.newToken === undefined) return reply.code(200).send(answer(joined.workshop, joined.learner, joined.seat));
        keep(request, reply, joined.newToken, joined.workshop);
        return reply.code(201).send(answer(joined.workshop, joined.learner, joined.seat, joined.newToken));
      } catch (error) {
        c.metrics.joins.inc({ result: 'refused' });
        throw error;
      }
    },
  );

  app.post<{ Body: { token: string } }>(
    '/api/rejoin',
    {
      config: { rateLimit },
      schema: {
        security: [],
        body: {
          type: 'object',
          required: ['token'],
          additionalProperties: false,
          properties: { token: { type: 'string', minLength: 1, maxLength: 200 } },
        },
        response: { 200: learnerSeatReply, 404: errorReply },
      },
    },
    async (request, reply) => {
      const found = await c.service.learnerOf(request.body.token);
      if (!found) throw new ApiError(404, 'invalid_token', 'this rejoin token opens no seat');
      keep(request, reply, request.body.token, found.workshop);
      return answer(found.workshop, found.learner, found.seat);
    },
  );

  app.get('/api/me', { schema: { security: [], response: { 200: learnerSeatReply, 401: errorReply } } }, async (request, reply) => {
    const token = c.auth.learnerToken(request);
    const found = token === undefined ? undefined : await c.service.learnerOf(token);
    if (!found) {
      if (token !== undefined) ServerAuth.clear(reply, LEARNER_COOKIE);
      throw new ApiError(401, 'not_joined', 'no seat: join with the workshop code first');
    }
    return answer(found.workshop, found.learner, found.seat);
  });
}
