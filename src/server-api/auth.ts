// Who is calling the server. Instructors: a session token in the HttpOnly `ct_session` cookie (a
// browser; state-changing requests must repeat the session's CSRF token in `X-CSRF-Token`) or as
// `Authorization: Bearer` (the CLI; a header no other site can make a browser send). Learners: the
// token in the `ct_learner` cookie. Cookies are SameSite=Strict, HttpOnly, Secure over https.
import { timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { tokenDigest } from '../workshops/codes.ts';
import type { Session } from '../workshops/model.ts';
import type { WorkshopRepository } from '../workshops/ports.ts';
import { ApiError } from './errors.ts';

export const SESSION_COOKIE = 'ct_session';
export const LEARNER_COOKIE = 'ct_learner';
export const CSRF_HEADER = 'x-csrf-token';

export interface InstructorIdentity extends Session {
  /** Cookie sessions need the CSRF token on state-changing requests; bearer sessions do not. */
  readonly via: 'cookie' | 'bearer';
}

export type SecureCookies = 'auto' | 'always' | 'never';

/** Cookie attributes: never readable by scripts, never sent by another site's page. */
export function cookieOptions(request: FastifyRequest, secure: SecureCookies, maxAgeS: number) {
  return {
    path: '/',
    httpOnly: true,
    sameSite: 'strict' as const,
    secure: secure === 'always' || (secure === 'auto' && request.protocol === 'https'),
    maxAge: maxAgeS,
  };
}

function bearer(header: string | undefined): string | undefined {
  return /^Bearer\s+(\S+)\s*$/i.exec(header ?? '')?.[1];
}

function same(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

const SAFE_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

export class ServerAuth {
  constructor(
    private readonly repo: WorkshopRepository,
    private readonly now: () => number,
  ) {}

  /** The instructor behind the request's bearer token or session cookie, if any is valid. */
  async instructor(request: FastifyRequest): Promise<InstructorIdentity | undefined> {
    const fromHeader = bearer(request.headers.authorization);
    return fromHeader !== undefined
      ? this.instructorByToken(fromHeader, 'bearer')
      : this.instructorByToken(request.cookies[SESSION_COOKIE], 'cookie');
  }

  async instructorByToken(token: string | undefined, via: 'cookie' | 'bearer'): Promise<InstructorIdentity | undefined> {
    if (token === undefined || token === '' || token.length > 200) return undefined;
    const session = await this.repo.sessionByDigest(tokenDigest(token), this.now());
    return session ? { ...session, via } : undefined;
  }

  /** The instructor, or 401; a cookie session changing state without its CSRF token gets 403. */
  async requireInstructor(request: FastifyRequest): Promise<InstructorIdentity> {
    const identity = await this.instructor(request);
    if (!identity) throw new ApiError(401, 'unauthorized', 'log in first (POST /api/login)');
    if (identity.via === 'cookie' && !SAFE_METHODS.has(request.method)) {
      const presented = request.headers[CSRF_HEADER];
      if (typeof presented !== 'string' || presented === '')
        throw new ApiError(403, 'csrf_required', `send the session's CSRF token in ${CSRF_HEADER}`);
      if (!same(presented, identity.csrfToken))
        throw new ApiError(403, 'csrf_invalid', `the ${CSRF_HEADER} header does not match the session`);
    }
    return identity;
  }

  learnerToken(request: FastifyRequest): string | undefined {
    return ServerAuth.learnerTokenFrom(request.cookies);
  }

  static learnerTokenFrom(cookies: Record<string, string | undefined>): string | undefined {
    const token = cookies[LEARNER_COOKIE];
    return token === undefined || token === '' || token.length > 200 ? undefined : token;
  }

  /** Drops a cookie that opened nothing, so the browser stops sending it. */
  static clear(reply: FastifyReply, name: string): void {
    reply.clearCookie(name, { path: '/' });
  }
}

/** The actor as the audit table names it. */
export function actorOfInstructor(identity: InstructorIdentity): string {
  return `instructor:${identity.email}`;
}
