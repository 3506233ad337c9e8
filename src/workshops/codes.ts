// Secrets and ids the server hands out: join codes nobody can guess, workshop ids the agents
// accept, and opaque tokens (sessions, learners) kept only as digests.
import { createHash, randomBytes, randomInt } from 'node:crypto';

/** No 0/O, 1/I/L: read aloud and typed from a slide without mistakes. */
export const JOIN_CODE_ALPHABET = 'ABCDEFGHJKMNPQRSTUVWXYZ23456789';
export const JOIN_CODE_LENGTH = 8;
export const JOIN_CODE_PATTERN = `^[${JOIN_CODE_ALPHABET}]{${JOIN_CODE_LENGTH}}$`;

/** 8 characters of 31: about 40 bits, from the system's CSPRNG. */
export function newJoinCode(): string {
  let code = '';
  for (let i = 0; i < JOIN_CODE_LENGTH; i++) code += JOIN_CODE_ALPHABET[randomInt(JOIN_CODE_ALPHABET.length)];
  return code;
}

/** A code as a learner may type it: case and spaces or dashes do not matter. */
export function normalizeJoinCode(text: string): string {
  return text.toUpperCase().replace(/[\s-]+/g, '');
}

/** `ws-` and 10 of [a-z0-9]: matches the agent's workshop id pattern, unique across servers. */
export function newWorkshopId(): string {
  const alphabet = 'abcdefghijkmnpqrstuvwxyz23456789';
  let id = 'ws-';
  for (let i = 0; i < 10; i++) id += alphabet[randomInt(alphabet.length)];
  return id;
}

export function newId(prefix: string): string {
  return `${prefix}-${randomBytes(9).toString('hex')}`;
}

/** 256 random bits, URL-safe: session and learner tokens. */
export function newSecretToken(): string {
  return randomBytes(32).toString('base64url');
}

/** What the database keeps of a token: its SHA-256, so a copy of the database opens nothing. */
export function tokenDigest(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}
