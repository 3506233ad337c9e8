// Who is calling. The agent token (AGENT_TOKEN) opens everything; a learner token (a short-lived
// JWT signed with WORKSPACE_TOKEN_SECRET) opens /proxy/{workshop}/{seat}/* of its own seat only.
// Without AGENT_TOKEN the agent is loopback-only and open (config.ts refuses anything else).
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import { SignJWT, jwtVerify, errors as joseErrors } from 'jose';

export type Identity =
  | { readonly kind: 'agent' }
  | { readonly kind: 'loopback' }
  | {
      readonly kind: 'learner';
      readonly workshopId: string;
      readonly seatId: number;
      readonly tokenId: string;
      /** Creation time (ms) of the VM the token was issued for: a VM made again at the seat is another learner's. */
      readonly vmCreatedAt: number;
    };

/** A short label for logs and the audit trail; never contains a secret. */
export function actorOf(identity: Identity | null): string {
  if (!identity) return 'unauthenticated';
  if (identity.kind === 'learner') return `learner:${identity.workshopId}/${identity.seatId}#${identity.tokenId}`;
  return identity.kind === 'agent' ? 'agent-token' : 'loopback';
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}

/** Compares through fixed-length digests so neither length nor content leaks through timing. */
export function tokenMatches(presented: string | undefined, expected: string): boolean {
  return timingSafeEqual(digest(presented ?? ''), digest(expected)) && presented !== undefined;
}

export function bearerToken(header: string | undefined): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return match?.[1];
}

const AUDIENCE = 'clarateach-proxy';
const PROXY_PATH = /^\/proxy\/([^/?#]+)\/([^/?#]+)(?:[/?#]|$)/;

export interface IssuedToken {
  readonly token: string;
  readonly tokenId: string;
  readonly expiresAt: Date;
}

export class Authenticator {
  private readonly key: Uint8Array | undefined;

  constructor(
    private readonly agentToken: string | undefined,
    learnerSecret: string | undefined,
    private readonly issuer: string,
  ) {
    this.key = learnerSecret === undefined ? undefined : new TextEncoder().encode(learnerSecret);
  }

  get learnerTokensEnabled(): boolean {
    return this.key !== undefined;
  }

  /**
   * The caller's identity from its bearer header or, for learner tokens, a `token` query
   * parameter (browsers cannot set headers on WebSockets); undefined when nothing valid is given.
   */
  async identify(authorization: string | undefined, queryToken: string | undefined): Promise<Identity | undefined> {
    if (this.agentToken === undefined) return { kind: 'loopback' };
    // Browsers cannot set headers on WebSockets or links: the page passes its token in the query.
    const candidate = bearerToken(authorization) ?? queryToken;
    if (tokenMatches(candidate, this.agentToken)) return { kind: 'agent' };
    if (this.key === undefined || candidate === undefined) return undefined;
    try {
      const { payload } = await jwtVerify(candidate, this.key, { audience: AUDIENCE, issuer: this.issuer, algorithms: ['HS256'] });
      const workshopId = payload['ws'];
      const seatId = payload['seat'];
      const vmCreatedAt = payload['vm'];
      if (
        typeof workshopId !== 'string' ||
        typeof seatId !== 'number' ||
        typeof vmCreatedAt !== 'number' ||
        typeof payload.jti !== 'string'
      ) {
        return undefined;
      }
      return { kind: 'learner', workshopId, seatId, tokenId: payload.jti, vmCreatedAt };
    } catch (error) {
      if (error instanceof joseErrors.JOSEError || error instanceof TypeError) return undefined;
      throw error;
    }
  }

  /**
   * Whether `identity` may call `path` (the raw request path). `vmCreatedAt` says when the VM now
   * at the token's seat was made (undefined: none is).
   */
  allows(identity: Identity, path: string, vmCreatedAt: (workshopId: string, seatId: number) => number | undefined): boolean {
    if (identity.kind !== 'learner') return true;
    if (vmCreatedAt(identity.workshopId, identity.seatId) !== identity.vmCreatedAt) return false;
    const match = PROXY_PATH.exec(path);
    if (!match) return false;
    try {
      return decodeURIComponent(match[1] ?? '') === identity.workshopId && decodeURIComponent(match[2] ?? '') === String(identity.seatId);
    } catch {
      return false;
    }
  }

  async issue(workshopId: string, seatId: number, vmCreatedAt: number, ttlSeconds: number): Promise<IssuedToken> {
    if (this.key === undefined) throw new Error('learner tokens are not configured (WORKSPACE_TOKEN_SECRET)');
    const tokenId = randomUUID();
    const expiresAt = new Date(Math.floor(Date.now() / 1000 + ttlSeconds) * 1000);
    const token = await new SignJWT({ ws: workshopId, seat: seatId, vm: vmCreatedAt })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
      .setSubject(`${workshopId}/${seatId}`)
      .setAudience(AUDIENCE)
      .setIssuer(this.issuer)
      .setJti(tokenId)
      .setIssuedAt()
      .setExpirationTime(Math.floor(expiresAt.getTime() / 1000))
      .sign(this.key);
    return { token, tokenId, expiresAt };
  }
}
