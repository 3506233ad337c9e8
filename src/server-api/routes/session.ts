// Instructors' sessions and accounts: POST /api/login, POST /api/logout, GET /api/session,
// POST /api/instructors (a logged-in instructor adds another).
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { newId, newSecretToken, tokenDigest } from '../../workshops/codes.ts';
import type { Instructor } from '../../workshops/model.ts';
import { DUMMY_HASH, MIN_PASSWORD_LENGTH, hashPassword, verifyPassword } from '../passwords.ts';
import { ApiError } from '../errors.ts';
import { SESSION_COOKIE, ServerAuth, actorOfInstructor, cookieOptions } from '../auth.ts';
import type { ServerContext } from '../context.ts';
import { errorReply } from '../schemas.ts';

// No control characters either: PostgreSQL's text refuses NUL.
export const EMAIL = { type: 'string', minLength: 3, maxLength: 254, pattern: '^[^\\s@\\p{Cc}]+@[^\\s@\\p{Cc}]+$' } as const;
const PASSWORD = { type: 'string', minLength: 1, maxLength: 1024 } as const;
/** A password an account is made with (a login takes any: old accounts keep working if the rule changes). */
export const NEW_PASSWORD = { ...PASSWORD, minLength: MIN_PASSWORD_LENGTH } as const;

export const sessionReply = {
  type: 'object',
  required: ['email', 'csrf_token', 'expires_at'],
  properties: {
    email: { type: 'string' },
    csrf_token: { type: 'string', description: `send it as X-CSRF-Token on every state-changing request made with the session cookie` },
    expires_at: { type: 'string', format: 'date-time' },
    session_token: { type: 'string', description: 'only when asked for (`"bearer": true`): for `Authorization: Bearer` (the CLI)' },
  },
} as const;

export function normalizeEmail(email: string): string {
  return email.trim().toLowerCase();
}

/** Guessing passwords or setup codes: a few tries a minute per address (at least 10, else as joins). */
export function credentialRateLimit(c: ServerContext) {
  return { rateLimit: { max: Math.max(10, c.joinRateLimit), timeWindow: '1 minute' } };
}

/** A new session for the instructor: the HttpOnly cookie set, and the reply's body (the token in it only when asked for). */
export async function startSession(
  c: ServerContext,
  request: FastifyRequest,
  reply: FastifyReply,
  instructor: Instructor,
  bearer: boolean,
): Promise<{ email: string; csrf_token: string; expires_at: string; session_token?: string }> {
  const token = newSecretToken();
  const csrf = newSecretToken();
  const expiresAt = c.clock.now() + c.sessionTtlS * 1000;
  await c.repo.createSession(tokenDigest(token), instructor.id, csrf, expiresAt);
  reply.setCookie(SESSION_COOKIE, token, cookieOptions(request, c.secureCookies, c.sessionTtlS));
  return {
    email: instructor.email,
    csrf_token: csrf,
    expires_at: new Date(expiresAt).toISOString(),
    ...(bearer ? { session_token: token } : {}),
  };
}

export async function sessionRoutes(app: FastifyInstance, c: ServerContext): Promise<void> {
  app.post<{ Body: { email: string; password: string; bearer?: boolean } }>(
    '/api/login',
    {
      config: credentialRateLimit(c),
      schema: {
        security: [],
        body: {
          type: 'object',
          required: ['email', 'password'],
          additionalProperties: false,
          properties: { email: EMAIL, password: PASSWORD, bearer: { type: 'boolean' } },
        },
        response: { 200: sessionReply, 401: errorReply },
      },
    },
    async (request, reply) => {
      const instructor = await c.repo.instructorByEmail(normalizeEmail(request.body.email));
      // Without an account the check still runs: how long it takes says nothing.
      const ok = await verifyPassword(request.body.password, instructor?.passwordHash ?? DUMMY_HASH);
      if (!instructor || !ok) throw new ApiError(401, 'invalid_credentials', 'wrong email or password');
      return startSession(c, request, reply, instructor, request.body.bearer === true);
    },
  );

  app.post('/api/logout', { schema: { response: { 204: { type: 'null' } } } }, async (request, reply) => {
    await c.auth.requireInstructor(request);
    const token = /^Bearer\s+(\S+)/i.exec(request.headers.authorization ?? '')?.[1] ?? request.cookies[SESSION_COOKIE];
    if (token) await c.repo.deleteSession(tokenDigest(token));
    ServerAuth.clear(reply, SESSION_COOKIE);
    return reply.code(204).send();
  });

  app.get('/api/session', { schema: { response: { 200: sessionReply, 401: errorReply } } }, async (request) => {
    const identity = await c.auth.requireInstructor(request);
    return { email: identity.email, csrf_token: identity.csrfToken, expires_at: new Date(identity.expiresAt).toISOString() };
  });

  app.post<{ Body: { email: string; password: string } }>(
    '/api/instructors',
    {
      schema: {
        body: {
          type: 'object',
          required: ['email', 'password'],
          additionalProperties: false,
          properties: { email: EMAIL, password: NEW_PASSWORD },
        },
        response: { 201: { type: 'object', properties: { id: { type: 'string' }, email: { type: 'string' } } } },
      },
    },
    async (request, reply) => {
      const identity = await c.auth.requireInstructor(request);
      const email = normalizeEmail(request.body.email);
      const created = await c.repo.addInstructor(newId('in'), email, await hashPassword(request.body.password));
      await c.repo.audit({ actor: actorOfInstructor(identity), action: 'instructor.add', target: email, workshopId: null }, c.clock.now());
      return reply.code(201).send({ id: created.id, email: created.email });
    },
  );
}
