// The first instructor account on a fresh server: GET /api/setup says whether one is needed, POST
// /api/setup makes it with the one-time setup code the server logged at its start (only its digest
// is kept), and logs the new instructor in. Once any account exists every code is gone.
import type { FastifyInstance } from 'fastify';
import { newId, newSecretToken, tokenDigest } from '../../workshops/codes.ts';
import type { WorkshopRepository } from '../../workshops/ports.ts';
import { hashPassword } from '../passwords.ts';
import type { ServerContext } from '../context.ts';
import { errorReply } from '../schemas.ts';
import { EMAIL, NEW_PASSWORD, credentialRateLimit, normalizeEmail, sessionReply, startSession } from './session.ts';

interface SetupBody {
  setup_code: string;
  email: string;
  password: string;
}

/**
 * A new setup code when no instructor exists yet (its digest kept; several server processes
 * may each add one, all valid until the first account), else undefined.
 */
export async function issueSetupCode(repo: WorkshopRepository, now: number): Promise<string | undefined> {
  if ((await repo.countInstructors()) > 0) return undefined;
  const code = newSecretToken();
  return (await repo.addSetupCode(tokenDigest(code), now)) ? code : undefined;
}

/** The address an operator opens to make the first account: the dashboard, with the code. */
export function setupUrl(serverUrl: string, code: string): string {
  return `${serverUrl.replace(/\/+$/, '')}/?setup=${encodeURIComponent(code)}`;
}

export async function setupRoutes(app: FastifyInstance, c: ServerContext): Promise<void> {
  app.get(
    '/api/setup',
    {
      schema: {
        security: [],
        description: 'Whether the server still needs its first instructor account (then the dashboard offers the sign-up form)',
        response: { 200: { type: 'object', required: ['needed'], properties: { needed: { type: 'boolean' } } } },
      },
    },
    async () => ({ needed: (await c.repo.countInstructors()) === 0 }),
  );

  app.post<{ Body: SetupBody }>(
    '/api/setup',
    {
      config: credentialRateLimit(c),
      schema: {
        security: [],
        description:
          "The first instructor account, made with the setup code from the server's log; the new instructor is logged in (session cookie)",
        body: {
          type: 'object',
          required: ['setup_code', 'email', 'password'],
          additionalProperties: false,
          properties: { setup_code: { type: 'string', minLength: 1, maxLength: 200 }, email: EMAIL, password: NEW_PASSWORD },
        },
        response: { 201: sessionReply, 401: errorReply, 409: errorReply },
      },
    },
    async (request, reply) => {
      const email = normalizeEmail(request.body.email);
      // Hashed before the lock is taken: scrypt's time is not spent while other sign-ups wait.
      const passwordHash = await hashPassword(request.body.password);
      const instructor = await c.repo.signUpFirstInstructor(tokenDigest(request.body.setup_code.trim()), newId('in'), email, passwordHash);
      await c.repo.audit({ actor: `instructor:${email}`, action: 'instructor.signup', target: email, workshopId: null }, c.clock.now());
      return reply.code(201).send(await startSession(c, request, reply, instructor, false));
    },
  );
}
