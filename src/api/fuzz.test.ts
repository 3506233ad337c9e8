// Property-based fuzzing of every agent endpoint with random and hostile input, in process
// (app.inject), with the real store and lifecycle and the stand-in VMM (see src/api/app.test.ts).
// Properties: no 5xx, every error is exactly `{error, code}` with a known code, nothing crashes,
// the state is exactly what the valid calls made, /health answers throughout, the files proxy
// never hands the guest a path that leaves the workspace, and hostile WebSocket upgrades get a
// 4xx. Fixed seeds (FUZZ_SEED overrides); fast-check prints seed and counterexample on failure.
import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import fc from 'fast-check';
import { SignJWT } from 'jose';
import { Authenticator } from './auth.ts';
import { WORKSHOP_ID_PATTERN } from './schemas.ts';
import type { VmRecord } from '../vms/model.ts';
import {
  buildFuzzApi,
  FIRST_VM_IP,
  FUZZ_VM_TIME,
  rawHttp,
  rawRequest,
  startStandInFileServer,
  WORKER_ID,
  type FuzzApi,
  type StandInFileServer,
} from '../../test/support/fuzz.ts';

const SEED = Number(process.env['FUZZ_SEED'] ?? 20261130);
const AGENT_TOKEN = 'agent-token-fuzz-1';
const SECRET = 'w'.repeat(40);
const SEED_WS = 'seed';
const SEED_IP = FIRST_VM_IP; // seat 1 of the loopback subnet of test/support/fuzz.ts
const BODY_LIMIT = 16 * 1024;
const MAX_SEAT = 244;
const WORKSHOP_ID = new RegExp(WORKSHOP_ID_PATTERN);

/** Every code the API may answer a client error with, and the statuses that go with it. */
const CLIENT_ERRORS: Record<string, readonly number[]> = {
  invalid_json: [400],
  missing_field: [400],
  invalid_field: [400],
  invalid_request: [400, 414],
  unauthorized: [401],
  forbidden: [403],
  forbidden_path: [403],
  not_found: [404],
  vm_not_found: [404],
  vm_exists: [409],
  body_too_large: [413],
  unsupported_media_type: [415],
};

interface Config {
  readonly name: string;
  readonly token: string | undefined;
}
const CONFIGS: readonly Config[] = [
  { name: 'with AGENT_TOKEN and WORKSPACE_TOKEN_SECRET', token: AGENT_TOKEN },
  { name: 'without AGENT_TOKEN (loopback)', token: undefined },
];

// ---------------------------------------------------------------------------------------------
// Requests. A request prints as a short summary: bodies of megabytes stay out of the report.

class HostileRequest {
  constructor(
    readonly kind: string,
    readonly method: string,
    readonly url: string,
    readonly headers: Readonly<Record<string, string>>,
    readonly payload: string | Buffer | undefined,
  ) {}

  [fc.toStringMethod](): string {
    const p = this.payload;
    const body =
      p === undefined
        ? ''
        : ` body(${p.length}): ${JSON.stringify(typeof p === 'string' ? p.slice(0, 160) : p.subarray(0, 160).toString())}`;
    return `${this.kind}: ${this.method} ${JSON.stringify(this.url.slice(0, 300))} ${JSON.stringify(this.headers).slice(0, 400)}${body}`;
  }
}

function safeDecode(text: string): string | undefined {
  try {
    return decodeURIComponent(text);
  } catch {
    return undefined;
  }
}

/** Percent-encodes any JS string, lone surrogates included (as their WTF-8 bytes). */
function encodeAny(text: string): string {
  let out = '';
  for (const ch of text) {
    const unit = ch.charCodeAt(0);
    if (ch.length === 1 && unit >= 0xd800 && unit <= 0xdfff) {
      out += [0xe0 | (unit >> 12), 0x80 | ((unit >> 6) & 0x3f), 0x80 | (unit & 0x3f)]
        .map((b) => `%${b.toString(16).toUpperCase()}`)
        .join('');
    } else {
      out += encodeURIComponent(ch);
    }
  }
  return out;
}

/**
 * The route paths the router could see for `url`, conservatively: as sent, and as app.inject
 * normalises it (WHATWG URL: dot segments resolved), each decoded with slashes collapsed.
 */
function routePaths(url: string): string[] {
  const raw = url.split('?')[0] ?? '';
  let normalised = raw;
  try {
    normalised = new URL(url.startsWith('//') ? `http://localhost${url}` : url, 'http://localhost').pathname;
  } catch {
    // as sent only
  }
  return [raw, normalised].map((path) => (safeDecode(path) ?? path).replace(/\/+/g, '/').replace(/(.)\/$/, '$1'));
}

function contentTypeOf(headers: Readonly<Record<string, string>>): string | undefined {
  return headers['content-type'];
}

function authorised(headers: Readonly<Record<string, string>>, cfg: Config): boolean {
  if (cfg.token === undefined) return true;
  return /^Bearer\s+(\S+)\s*$/i.exec(headers['authorization'] ?? '')?.[1] === cfg.token;
}

/** Whether Fastify would hand the route this body (then a DELETE goes ahead), conservatively. */
function bodyAccepted(request: HostileRequest): { ok: boolean; value?: unknown } {
  const payload = request.payload;
  if (payload === undefined || payload.length === 0) return { ok: true };
  if (Buffer.byteLength(payload) > BODY_LIMIT) return { ok: false };
  const text = payload.toString();
  const type = (contentTypeOf(request.headers) ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
  if (type === 'application/json') {
    if (text.trim() === '') return { ok: true };
    try {
      return { ok: true, value: JSON.parse(text) as unknown };
    } catch {
      return { ok: false };
    }
  }
  if (UNSUPPORTED_TYPES.has(contentTypeOf(request.headers) ?? '') || contentTypeOf(request.headers) === undefined) return { ok: false };
  return { ok: true, value: text };
}

/**
 * True when a request could legitimately change state: a DELETE of the seed VM or a create
 * with a valid body, by an authorised caller. The fuzz leaves those to the model batch.
 */
function mayChangeState(request: HostileRequest, cfg: Config): boolean {
  if (!authorised(request.headers, cfg)) return false;
  const paths = routePaths(request.url);
  const method = request.method.toUpperCase();
  if (method === 'DELETE') {
    const seed = paths.some((path) => {
      const match = /^\/vms\/([^/]+)\/([^/]+)$/.exec(path);
      return match !== null && match[1] === SEED_WS && /^[0-9]{1,6}$/.test(match[2] ?? '');
    });
    return seed && bodyAccepted(request).ok;
  }
  if (method === 'POST' && paths.includes('/vms')) {
    const body = bodyAccepted(request);
    if (!body.ok || typeof body.value !== 'object' || body.value === null) return false;
    const value = body.value as Record<string, unknown>;
    return typeof value['workshop_id'] === 'string' && WORKSHOP_ID.test(value['workshop_id']) && typeof value['seat_id'] === 'number';
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Generators.

const NASTY_CHARS = [
  '\u0000',
  '\u0001',
  '\u0008',
  '\u001b',
  '\u001f',
  '\u007f',
  '\u0085',
  '\u00a0',
  '\u200b',
  '\u202e',
  '\u2028',
  '\ufeff',
  '\ud800',
  '\udbff',
  '\udc00',
  '\udfff',
  '\uffff',
  '\u{1f600}',
  'é',
  'İ',
  'ß',
  '١',
  '１',
  '/',
  '\\',
  '.',
  '..',
  '%',
  '%00',
  '"',
  "'",
  '<',
  '>',
  '{',
  '}',
  '[',
  ']',
  ' ',
  '\t',
  '\n',
  '\r',
  '?',
  '#',
  '&',
  '=',
  ';',
  '$',
  '`',
  '*',
  '~',
];
const nastyString = fc.oneof(
  fc.string({ unit: fc.constantFrom(...NASTY_CHARS), maxLength: 12 }),
  fc.string({ unit: 'binary', maxLength: 24 }),
  fc.string({ unit: 'grapheme', maxLength: 16 }),
  fc.tuple(fc.stringMatching(/^[a-z0-9-]{1,10}$/), fc.constantFrom(...NASTY_CHARS)).map(([a, b]) => a + b),
);

/** Workshop path segments (already URL text) that name no VM, or name the seed in a hostile way. */
const hostileWorkshopSegment = fc.oneof(
  fc.constantFrom(
    '..',
    '.',
    '%2e%2e',
    '%2E%2E',
    '%2e%2e%2f',
    '..%2f..%2f',
    '%252e%252e',
    '%00',
    'seed%00',
    '%00seed',
    'seed%2f..',
    'seed%2F1',
    '%2f',
    '%5c',
    '..%5c',
    '%c0%ae%c0%ae',
    '%ff',
    '%',
    '%e2%80%ae',
    'SEED',
    'Seed',
    'seed;1',
    'seed%20',
    '%20seed',
    '-seed',
    'a'.repeat(64),
    'a'.repeat(201),
    '%F0%9F%98%80',
    '%ed%a0%80',
    'null',
    '__proto__',
    'constructor',
    'seed%0a',
    'seed.1',
  ),
  nastyString.map(encodeAny),
  fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,20}$/).filter((w) => w !== SEED_WS && !w.startsWith('fz-')),
);
const hostileSeatSegment = fc.oneof(
  fc.constantFrom(
    '0',
    '-1',
    '-0',
    '245',
    '999999',
    '1000000',
    '99999999999999999999',
    '1.5',
    '1.0',
    '1e0',
    '1e3',
    '1E2',
    '0x1',
    '0b1',
    '+1',
    '%201',
    '1%20',
    '1%00',
    '%00',
    '%31%00',
    '%EF%BC%91',
    'Infinity',
    '-Infinity',
    'NaN',
    'one',
    '1%2f..',
    '%2e%2e',
    '..',
    '2147483648',
    '4294967297',
    '9007199254740993',
    '1_0',
    '%D9%A1',
    '1;2',
    '1%3F',
    '1%23',
  ),
  fc.integer({ min: -1_000_000, max: 0 }).map(String),
  fc.integer({ min: MAX_SEAT + 1, max: 9_999_999 }).map(String),
  fc.double({ noNaN: false }).map(String).map(encodeAny),
  fc.bigInt().map(String),
  nastyString.map(encodeAny),
  fc.integer({ min: 2, max: MAX_SEAT }).map(String),
);
const workshopSegment = fc.oneof({ weight: 1, arbitrary: fc.constant(SEED_WS) }, { weight: 3, arbitrary: hostileWorkshopSegment });
const seatSegment = fc.oneof({ weight: 1, arbitrary: fc.constantFrom('1', '01', '%31') }, { weight: 3, arbitrary: hostileSeatSegment });

const hostileFilePath = fc.oneof(
  fc.constantFrom(
    '../x',
    '..',
    '..%2f..%2fetc%2fpasswd',
    '%2e%2e/%2e%2e/x',
    '%2E%2E%2F',
    '%252e%252e%252fx',
    '%25252e%25252e%25252f',
    'a%00b',
    '%00',
    'x/../../y',
    '....//',
    '..\\x',
    '%5c..%5c',
    '%c0%ae%c0%ae/',
    'a/./b',
    '%2e/%2e%2e',
    '.%2e/x',
    'x/..',
    'x/%2e%2e',
    '%2e%2e',
    'ok.txt',
    'dir/sub/file',
    '',
    'a%20b',
    '%e2%80%ae',
    '~/.ssh/id_rsa',
    '/etc/passwd',
    '//etc/passwd',
  ),
  fc
    .array(fc.oneof(nastyString.map(encodeAny), fc.constantFrom('..', '.', '%2e%2e', '%2e.', '.%2e', '%00')), { maxLength: 5 })
    .map((s) => s.join('/')),
);
const queryString = fc.oneof(
  fc.constant(''),
  fc.constantFrom(
    '?workshop_id=seed',
    '?workshop_id=SEED',
    '?workshop_id=a&workshop_id=b',
    '?__proto__[x]=1',
    '?constructor=1',
    '?x=%',
    '?%zz=1',
    '?bytes=-1',
    '?bytes=1e3',
    '?bytes=99999999',
    '?bytes=0',
    '?bytes=',
    '?bytes=1&bytes=2',
    '?token=',
    '?token=%ff',
  ),
  fc.tuple(fc.constantFrom('workshop_id', 'bytes', 'token', 'x', ''), nastyString).map(([k, v]) => `?${k}=${encodeAny(v)}`),
);

function base64url(value: string): string {
  return Buffer.from(value).toString('base64url');
}

/** Learner tokens that must open nothing but their own seat's proxy paths (most: nothing). */
async function bogusTokens(): Promise<{ all: string[]; genuine: string }> {
  const right = new TextEncoder().encode(SECRET);
  const claims = { ws: SEED_WS, seat: 1 };
  const sign = (payload: Record<string, unknown>, alg = 'HS256', key = right) =>
    new SignJWT(payload)
      .setProtectedHeader({ alg, typ: 'JWT' })
      .setAudience('clarateach-proxy')
      .setIssuer(WORKER_ID)
      .setJti('fuzz')
      .setIssuedAt()
      .setExpirationTime('10m')
      .sign(key);
  const mine = new Authenticator(undefined, SECRET, WORKER_ID);
  const valid = (await mine.issue(SEED_WS, 1, FUZZ_VM_TIME, 600)).token;
  const [header, payload] = valid.split('.');
  const otherSeat = (await mine.issue(SEED_WS, 2, FUZZ_VM_TIME, 600)).token;
  const all = [
    `${base64url('{"alg":"none","typ":"JWT"}')}.${payload}.`,
    `${base64url('{"alg":"none"}')}.${base64url(JSON.stringify({ ...claims, aud: 'clarateach-proxy', iss: WORKER_ID, jti: 'x', exp: 9e9 }))}.`,
    (await new Authenticator(undefined, 'x'.repeat(40), WORKER_ID).issue(SEED_WS, 1, FUZZ_VM_TIME, 600)).token, // wrong secret
    (await mine.issue(SEED_WS, 1, FUZZ_VM_TIME, -10)).token, // expired
    otherSeat, // another seat
    (await mine.issue('other', 1, FUZZ_VM_TIME, 600)).token, // another workshop
    (await new Authenticator(undefined, SECRET, 'another-worker').issue(SEED_WS, 1, FUZZ_VM_TIME, 600)).token, // another issuer
    await new SignJWT(claims)
      .setProtectedHeader({ alg: 'HS256' })
      .setAudience('elsewhere')
      .setIssuer(WORKER_ID)
      .setJti('x')
      .setExpirationTime('10m')
      .sign(right),
    await sign(claims, 'HS512', new TextEncoder().encode(SECRET.repeat(2))),
    await sign({ ws: SEED_WS, seat: '1' }),
    await sign({ ws: ['seed'], seat: 1 }),
    await new SignJWT(claims)
      .setProtectedHeader({ alg: 'HS256' })
      .setAudience('clarateach-proxy')
      .setIssuer(WORKER_ID)
      .setExpirationTime('10m')
      .sign(right), // no jti
    await new SignJWT(claims)
      .setProtectedHeader({ alg: 'HS256' })
      .setAudience('clarateach-proxy')
      .setIssuer(WORKER_ID)
      .setJti('x')
      .setNotBefore('1h')
      .setExpirationTime('2h')
      .sign(right),
    `${header}.${otherSeat.split('.')[1]}.${valid.split('.')[2]}`, // payload swapped under a valid signature
    `${valid.slice(0, -4)}AAAA`,
    valid, // genuine: opens /proxy/seed/1/* and nothing else
    'a.b.c',
    '....',
    'eyJ.eyJ.x',
    `${header}.${'A'.repeat(6000)}.${'B'.repeat(43)}`,
    AGENT_TOKEN.toUpperCase(),
    `${AGENT_TOKEN}x`,
    AGENT_TOKEN.slice(0, -1),
  ];
  return { all, genuine: valid };
}

const HEADER_CHAR = fc
  .oneof(fc.integer({ min: 0x20, max: 0x7e }), fc.integer({ min: 0x80, max: 0xff }), fc.constant(0x09))
  .map((c) => String.fromCharCode(c));
const headerValue = fc.string({ unit: HEADER_CHAR, maxLength: 60 }).map((s) => s.trim());

function authorizationHeader(tokens: readonly string[]): fc.Arbitrary<string | undefined> {
  const token = fc.constantFrom(...tokens);
  return fc.oneof(
    { weight: 5, arbitrary: fc.constant(`Bearer ${AGENT_TOKEN}`) },
    { weight: 2, arbitrary: fc.constant(undefined) },
    { weight: 4, arbitrary: token.map((t) => `Bearer ${t}`) },
    {
      weight: 3,
      arbitrary: fc.oneof(
        fc.constantFrom(
          'Bearer',
          'Bearer ',
          'Bearer  ',
          'bearer',
          `Basic ${Buffer.from(`user:${AGENT_TOKEN}`).toString('base64')}`,
          AGENT_TOKEN,
          `Bearer ${AGENT_TOKEN} extra`,
          `Token ${AGENT_TOKEN}`,
          `Bearer\t${AGENT_TOKEN}x`,
          `Bearer ${'A'.repeat(12_000)}`,
          ',',
          'Bearer ,',
        ),
        token.map((t) => t),
        headerValue,
        headerValue.map((v) => `Bearer ${v}`),
      ),
    },
  );
}

const UNSUPPORTED_TYPES = new Set([
  'application/xml',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x',
  'image/png',
  'application/octet-stream',
  ';',
  ';;;',
  'application/jsonx',
  'application/vnd.api+json',
  'json',
  '*/*',
  'text/html',
]);
const contentType = fc.oneof(
  { weight: 6, arbitrary: fc.constant('application/json') },
  { weight: 1, arbitrary: fc.constant(undefined) },
  {
    weight: 2,
    arbitrary: fc.constantFrom(
      'application/json; charset=utf-8',
      'APPLICATION/JSON',
      'application/json;charset=utf-16',
      'application/json; x="y"',
      'text/plain',
      'text/plain; charset=latin1',
    ),
  },
  { weight: 2, arbitrary: fc.constantFrom(...UNSUPPORTED_TYPES) },
);

function nested(open: string, close: string, depth: number, inner = ''): string {
  return open.repeat(depth) + inner + close.repeat(depth);
}
const BIG = {
  overLimit: `{"workshop_id":"big","seat_id":1,"pad":"${'x'.repeat(BODY_LIMIT)}"}`,
  megabytes: Buffer.alloc(4 * 1024 * 1024, 'a'),
  megabytesJson: `[${'1,'.repeat(1024 * 1024)}1]`,
  deepArrays8k: nested('[', ']', 8000),
  deepArrays10k: nested('[', ']', 10_000),
  deepArrays100k: nested('[', ']', 100_000),
  deepObjects: nested('{"a":', '}', 3000, '1'),
  deepInField: `{"workshop_id":"deep","seat_id":1,"x":${nested('[', ']', 7000)}}`,
  deepTtl: `{"ttl_s":${nested('[', ']', 7000)}}`,
};
const seatText = fc.oneof(
  fc.constantFrom(
    '-1',
    '0',
    '-0',
    '245',
    '1e3',
    '2.45e2',
    '1e-1',
    '-1e0',
    '0e0',
    '1E400',
    '-1E400',
    '1.5',
    '244.0001',
    '99999999999999999999',
    '"1"',
    'true',
    'null',
    '[1]',
    '{"n":1}',
    '0x1',
    '01',
    '+1',
    '.5',
    'NaN',
    'Infinity',
    '1 1',
  ),
  fc.tuple(fc.integer({ min: 1, max: 99 }), fc.integer({ min: -5, max: 400 })).map(([m, e]) => `${m}e${e}`),
  fc.double().map((d) => JSON.stringify(d)),
);
/** A value of the wrong type or out of range for each field of a create. */
const wrongValue: Record<string, fc.Arbitrary<unknown>> = {
  workshop_id: fc.oneof(
    fc.jsonValue().filter((v) => typeof v !== 'string'),
    nastyString.filter((s) => !WORKSHOP_ID.test(s)),
  ),
  seat_id: fc.oneof(
    fc.jsonValue().filter((v) => typeof v !== 'number'),
    fc.integer({ max: 0 }),
    fc.integer({ min: MAX_SEAT + 1 }),
    fc.double().filter((d) => !Number.isInteger(d)),
  ),
  vcpus: fc.oneof(
    fc.jsonValue().filter((v) => typeof v !== 'number'),
    fc.integer({ max: 0 }),
    fc.integer({ min: 5 }),
    fc.double().filter((d) => !Number.isInteger(d)),
  ),
  memory_mb: fc.oneof(
    fc.jsonValue().filter((v) => typeof v !== 'number'),
    fc.integer({ max: 127 }),
    fc.integer({ min: 4097 }),
  ),
  wait: fc.oneof(
    fc.jsonValue().filter((v) => v !== 'running' && v !== 'ready'),
    fc.constantFrom('READY', 'ready ', 'running\u0000', ''),
  ),
  wait_timeout_s: fc.oneof(
    fc.jsonValue().filter((v) => typeof v !== 'number'),
    fc.integer({ max: 0 }),
    fc.integer({ min: 601 }),
  ),
};
const createBody = fc.oneof(
  // One field of the wrong type or out of range, the others valid.
  fc
    .tuple(fc.constantFrom(...Object.keys(wrongValue)), fc.integer({ min: 1, max: MAX_SEAT }))
    .chain(([field, seat]) =>
      (wrongValue[field] ?? fc.constant(null)).map((bad) => JSON.stringify({ workshop_id: 'fz-wrong', seat_id: seat, [field]: bad })),
    ),
  // Unknown fields.
  fc
    .tuple(nastyString, fc.jsonValue())
    .filter(([k]) => !['workshop_id', 'seat_id', 'vcpus', 'memory_mb', 'wait', 'wait_timeout_s'].includes(k))
    .map(([k, v]) => JSON.stringify({ workshop_id: 'fz-unknown', seat_id: 3, [k]: v })),
  fc.constantFrom(
    '{"workshop_id":"fz-proto","seat_id":4,"__proto__":{"admin":true}}',
    '{"workshop_id":"fz-c","seat_id":4,"constructor":{"prototype":{}}}',
  ),
  // Seat ids as raw JSON number text: negative, zero, enormous, floats, strings, exponents.
  seatText.map((t) => `{"workshop_id":"fz-seat","seat_id":${t}}`),
  // Strings with control characters, NUL, lone surrogates, as JSON escapes and raw bytes.
  nastyString.map((s) => JSON.stringify({ workshop_id: s, seat_id: 5 })),
  nastyString.map((s) => `{"workshop_id":"fz${s}","seat_id":5}`),
  fc
    .uint8Array({ maxLength: 64 })
    .map((bytes) => Buffer.concat([Buffer.from('{"workshop_id":"'), Buffer.from(bytes), Buffer.from('","seat_id":6}')])),
  // Whatever JSON.
  fc.jsonValue().map((v) => JSON.stringify(v) ?? 'null'),
);
const malformedJson = fc.oneof(
  fc.constantFrom(
    '{',
    '}',
    '{"workshop_id": ',
    '{"workshop_id":"a","seat_id":1,}',
    "{'workshop_id':'a'}",
    '{"seat_id":NaN}',
    '{"a":1}//',
    '/*x*/{}',
    '\ufeff{}',
    'nul',
    'tru',
    '{"a" 1}',
    '[1,]',
    '"\\u12"',
    '"\\x41"',
    '{"a":"\u0000"}',
    '1 2',
    '\u0000',
    '{"a":1}{"b":2}',
  ),
  fc
    .tuple(
      fc.jsonValue().map((v) => JSON.stringify(v) ?? 'null'),
      fc.nat(),
      fc.constantFrom('', '{', '"', ',', ']', '\\', '\u0000'),
    )
    .map(([text, cut, extra]) => text.slice(0, cut % (text.length + 1)) + extra),
  fc.string({ unit: 'binary', maxLength: 40 }),
);
const anyBody: fc.Arbitrary<string | Buffer | undefined> = fc.oneof(
  { weight: 6, arbitrary: createBody },
  { weight: 4, arbitrary: malformedJson },
  { weight: 2, arbitrary: fc.constant(undefined) },
  { weight: 1, arbitrary: fc.constantFrom('', ' ', '\n\t', 'null', '{}', '[]', '"x"', '0') },
  { weight: 1, arbitrary: fc.constantFrom(...Object.values(BIG)) },
  { weight: 1, arbitrary: fc.nat({ max: 48 * 1024 }).map((n) => 'x'.repeat(BODY_LIMIT + 1 + n)) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(
      '{"ttl_s":29}',
      '{"ttl_s":"60"}',
      '{"ttl_s":1e9}',
      '{"ttl_s":60,"x":1}',
      '{"ttl_s":-1}',
      '{"ttl_s":null}',
      '[60]',
    ),
  },
);

const ALL_METHODS = [
  'GET',
  'HEAD',
  'POST',
  'PUT',
  'PATCH',
  'DELETE',
  'OPTIONS',
  'TRACE',
  'PROPFIND',
  'SEARCH',
  'LOCK',
  'COPY',
  'MKCOL',
  'CONNECT',
  'M-SEARCH',
];
const method = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom('GET', 'POST', 'DELETE') },
  { weight: 2, arbitrary: fc.constantFrom(...ALL_METHODS) },
);

/** A URL on one of the agent's endpoints, its segments hostile or not. */
const url = fc.oneof(
  fc
    .tuple(
      fc.constantFrom(
        '/health',
        '/info',
        '/vms',
        '/vms/',
        '//vms',
        '/VMS',
        '/vms/seed',
        '/proxy',
        '/proxy/seed/1',
        '/health/',
        '/%68ealth',
        '/vms%2f',
        '/',
        '*',
        '/vms/seed/1/2/3/4',
      ),
      queryString,
    )
    .map(([p, q]) => p + q),
  fc
    .tuple(workshopSegment, seatSegment, fc.constantFrom('', '/', '/logs', '/token', '/terminal', '/x'), queryString)
    .map(([w, s, tail, q]) => `/vms/${w}/${s}${tail}${q}`),
  fc
    .tuple(workshopSegment, seatSegment, fc.constantFrom('/health', '/terminal', '/files', '/files/'), queryString)
    .map(([w, s, tail, q]) => `/proxy/${w}/${s}${tail}${q}`),
  fc.tuple(workshopSegment, seatSegment, hostileFilePath, queryString).map(([w, s, f, q]) => `/proxy/${w}/${s}/files/${f}${q}`),
  nastyString.map((s) => `/${encodeAny(s)}`),
);

function requestArb(
  cfg: Config,
  tokens: readonly string[],
  kind: string,
  parts: {
    method?: fc.Arbitrary<string>;
    url?: fc.Arbitrary<string>;
    body?: fc.Arbitrary<string | Buffer | undefined>;
    auth?: fc.Arbitrary<string | undefined>;
    type?: fc.Arbitrary<string | undefined>;
  },
): fc.Arbitrary<HostileRequest> {
  return fc
    .record({
      method: parts.method ?? method,
      url: parts.url ?? url,
      body: parts.body ?? anyBody,
      type: parts.type ?? contentType,
      auth: parts.auth ?? (cfg.token === undefined ? fc.option(headerValue, { nil: undefined }) : authorizationHeader(tokens)),
    })
    .map(({ method: m, url: u, body, type, auth }) => {
      const headers: Record<string, string> = {};
      if (auth !== undefined) headers['authorization'] = auth;
      if (type !== undefined && body !== undefined) headers['content-type'] = type;
      return new HostileRequest(kind, m, u, headers, body);
    })
    .filter((r) => !mayChangeState(r, cfg));
}

// ---------------------------------------------------------------------------------------------
// Checks.

interface Snapshot {
  readonly vms: readonly VmRecord[];
  readonly taps: readonly string[];
  readonly dirs: readonly string[];
}

function snapshot(api: FuzzApi): Snapshot {
  let dirs: string[] = [];
  try {
    dirs = readdirSync(api.manager.vmsDir).sort();
  } catch {
    dirs = [];
  }
  return { vms: api.manager.list(), taps: [...api.network.taps].sort(), dirs };
}

/** Checks an error answer is exactly `{error, code}` with a known code for its status; returns the code. */
function assertErrorShape(status: number, contentType: string | undefined, body: string, what: string): string {
  assert.match(String(contentType), /^application\/json/, `${what}: error content type`);
  let parsed: unknown;
  assert.doesNotThrow(() => (parsed = JSON.parse(body)), `${what}: error body is JSON: ${body.slice(0, 200)}`);
  assert.ok(typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed), `${what}: error body is an object`);
  const fields = parsed as Record<string, unknown>;
  assert.deepEqual(Object.keys(fields).sort(), ['code', 'error'], `${what}: error body is exactly {error, code}: ${body.slice(0, 200)}`);
  assert.equal(typeof fields['error'], 'string', what);
  assert.ok(String(fields['error']).length > 0, `${what}: error says something`);
  const allowed = CLIENT_ERRORS[String(fields['code'])];
  assert.ok(allowed, `${what}: known code, got ${String(fields['code'])}`);
  assert.ok(allowed.includes(status), `${what}: code ${String(fields['code'])} with status ${status}`);
  return String(fields['code']);
}

/**
 * Sends `r` in process (app.inject), or when `port` is given over a real socket with the request
 * target byte for byte (inject normalises URLs as WHATWG URL does: dot segments resolved).
 */
async function send(
  api: FuzzApi,
  r: HostileRequest,
  port?: number,
): Promise<{ status: number; contentType: string | undefined; body: string }> {
  if (port !== undefined) {
    const res = await rawHttp(port, rawRequest(r.method, r.url, r.headers, r.payload), { head: r.method === 'HEAD' });
    assert.ok(res.status !== undefined, `${r.method} ${r.url}: an answer over the socket`);
    return { status: res.status, contentType: res.headers['content-type'], body: res.body };
  }
  const res = await api.app.inject({
    method: r.method as 'GET',
    url: r.url,
    headers: r.headers,
    ...(r.payload === undefined ? {} : { payload: r.payload }),
  });
  return { status: res.statusCode, contentType: String(res.headers['content-type'] ?? ''), body: res.body };
}

/** Sends a hostile request and checks the answer and the state; returns "status code" for the statistics. */
async function checkHostile(api: FuzzApi, expected: Snapshot, r: HostileRequest, port?: number): Promise<string> {
  const res = await send(api, r, port);
  const what = `${r.method} ${r.url.slice(0, 120)} -> ${res.status}`;
  assert.ok(res.status < 500, `${what}: no 5xx: ${res.body.slice(0, 300)}`);
  let code = '';
  if (res.status >= 400 && r.method !== 'HEAD') code = assertErrorShape(res.status, res.contentType, res.body, what);
  assert.deepEqual(snapshot(api), expected, `${what}: state unchanged`);
  return `${res.status}${code ? ` ${code}` : ''}`;
}

async function assertHealthy(api: FuzzApi, vmCount: number): Promise<void> {
  const res = await api.app.inject({ url: '/health' });
  assert.equal(res.statusCode, 200, `/health: ${res.body}`);
  const body = res.json() as { status: string; vm_count: number };
  assert.equal(body.status, 'healthy');
  assert.equal(body.vm_count, vmCount);
}

function seedFor(name: string): number {
  let hash = SEED;
  for (const ch of name) hash = (Math.imul(hash, 31) + ch.charCodeAt(0)) | 0;
  return hash;
}

/** fast-check settings: a fixed seed per batch; FUZZ_SHRINK=1 shrinks a failure (slower). */
function runParameters(name: string, numRuns: number): fc.Parameters<unknown> {
  return { seed: seedFor(name), numRuns, endOnFailure: process.env['FUZZ_SHRINK'] === undefined };
}

/**
 * Runs one batch of a property, /health checked before, every 50 runs and after it. Returns how
 * often each outcome ("status code") came, which the tests print and check for coverage.
 */
async function batch<T>(
  api: FuzzApi,
  expected: Snapshot,
  name: string,
  arb: fc.Arbitrary<T>,
  numRuns: number,
  run: (value: T) => Promise<string>,
): Promise<Map<string, number>> {
  await assertHealthy(api, expected.vms.length);
  const outcomes = new Map<string, number>();
  let n = 0;
  await fc.assert(
    fc.asyncProperty(arb, async (value) => {
      const outcome = await run(value);
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
      if (++n % 50 === 0) await assertHealthy(api, expected.vms.length);
    }),
    runParameters(name, numRuns),
  );
  await assertHealthy(api, expected.vms.length);
  return outcomes;
}

function report(t: TestContext, outcomes: Map<string, number>): void {
  const total = [...outcomes.values()].reduce((a, b) => a + b, 0);
  t.diagnostic(
    `${total} requests: ${[...outcomes]
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k} x${v}`)
      .join(', ')}`,
  );
}

/** At least these outcomes came up: the generators reach what they are meant to reach. */
function assertReached(outcomes: Map<string, number>, wanted: readonly string[]): void {
  for (const outcome of wanted) assert.ok(outcomes.has(outcome), `outcome "${outcome}" reached; got ${[...outcomes.keys()].join(', ')}`);
}

/** The guest must never see a path that, decoded as a server would (once or twice), leaves the workspace. */
function assertConfined(received: readonly string[]): void {
  for (const target of received) {
    const path = target.split('?')[0] ?? '';
    assert.ok(path.startsWith('/files'), `forwarded path ${path}`);
    let decoded = path;
    for (let i = 0; i < 2; i++) {
      const next = safeDecode(decoded);
      assert.ok(next !== undefined || i > 0, `forwarded path decodes: ${path}`);
      if (next === undefined) break;
      decoded = next;
      assert.ok(!decoded.includes('\0') && !decoded.split(/[\\/]/).includes('..'), `forwarded path leaves the workspace: ${path}`);
    }
  }
}

// ---------------------------------------------------------------------------------------------

let files: StandInFileServer;
let tokens: string[];
let genuineLearner: string;
before(async () => {
  files = await startStandInFileServer(SEED_IP);
  ({ all: tokens, genuine: genuineLearner } = await bogusTokens());
});
after(async () => {
  await files.close();
});

for (const cfg of CONFIGS) {
  describe(`fuzz ${cfg.name}`, { timeout: 120_000 }, () => {
    let api: FuzzApi;
    let seeded: Snapshot;
    let port: number;
    const auth: Record<string, string> = cfg.token === undefined ? {} : { authorization: `Bearer ${cfg.token}` };
    before(async () => {
      api = await buildFuzzApi({ agentToken: cfg.token, secret: SECRET, capacity: 50 });
      const res = await api.app.inject({
        method: 'POST',
        url: '/vms',
        headers: { ...auth, 'content-type': 'application/json' },
        payload: { workshop_id: SEED_WS, seat_id: 1 },
      });
      assert.equal(res.statusCode, 201, res.body);
      assert.equal((res.json() as { ip: string }).ip, SEED_IP);
      seeded = snapshot(api);
      assert.equal(seeded.vms.length, 1);
      assert.deepEqual(seeded.taps, [seeded.vms[0]?.tapName]);
      await api.app.listen({ host: '127.0.0.1', port: 0 });
      port = (api.app.server.address() as AddressInfo).port;
    });
    after(async () => {
      await api.close();
    });

    test('random requests on every endpoint: methods, paths, bodies, content types, auth', async (t) => {
      const outcomes = await batch(api, seeded, `mixed-${cfg.name}`, requestArb(cfg, tokens, 'mixed', {}), 1500, (r) =>
        checkHostile(api, seeded, r),
      );
      report(t, outcomes);
      assertReached(outcomes, [
        '200',
        '400 invalid_field',
        '400 invalid_json',
        '404 not_found',
        '413 body_too_large',
        '415 unsupported_media_type',
      ]);
      if (cfg.token !== undefined) assertReached(outcomes, ['401 unauthorized', '403 forbidden']);
    });

    test('create bodies: wrong types, unknown fields, hostile seat ids, control characters, malformed JSON', async (t) => {
      const arb = requestArb(cfg, tokens, 'create', {
        method: fc.constant('POST'),
        url: fc.constantFrom('/vms', '/vms/', '/vms?x=1'),
        body: fc.oneof({ weight: 4, arbitrary: createBody }, { weight: 1, arbitrary: malformedJson }),
        auth: fc.constant(auth['authorization']),
        type: fc.oneof({ weight: 8, arbitrary: fc.constant('application/json') }, { weight: 1, arbitrary: contentType }),
      });
      const outcomes = await batch(api, seeded, `create-${cfg.name}`, arb, 1000, (r) => checkHostile(api, seeded, r));
      report(t, outcomes);
      assertReached(outcomes, ['400 invalid_field', '400 invalid_json', '400 missing_field']);
    });

    test('huge and deeply nested bodies on every endpoint that takes one', async (t) => {
      const arb = requestArb(cfg, tokens, 'big', {
        method: fc.constantFrom('POST', 'DELETE', 'PUT'),
        url: fc.constantFrom(
          '/vms',
          '/vms/seed/1/token',
          '/vms/seed/1',
          '/vms/seed/2',
          '/proxy/seed/1/files/up.bin',
          '/proxy/seed/1/health',
          '/health',
          '/info',
        ),
        body: fc.constantFrom(...Object.values(BIG), 'x'.repeat(BODY_LIMIT + 1)),
        auth: fc.constant(auth['authorization']),
      });
      const outcomes = await batch(api, seeded, `big-${cfg.name}`, arb, 60, (r) => checkHostile(api, seeded, r));
      report(t, outcomes);
      assertReached(outcomes, ['413 body_too_large']);
    });

    test('hostile path segments over real sockets: encoded ../ and %00, odd seat ids, every route with parameters', async (t) => {
      const arb = requestArb(cfg, tokens, 'path', {
        method: fc.constantFrom('GET', 'DELETE', 'POST', 'HEAD', 'PUT'),
        body: fc.constant(undefined),
        auth: fc.constant(auth['authorization']),
      });
      const before = files.received.length;
      const outcomes = await batch(api, seeded, `path-${cfg.name}`, arb, 1200, (r) => checkHostile(api, seeded, r, port));
      report(t, outcomes);
      assertReached(outcomes, ['400 invalid_field', '400 invalid_request', '404 not_found', '404 vm_not_found', '200']);
      assertConfined(files.received.slice(before));
    });

    test('the files proxy over real sockets: traversal, NUL and encodings never reach the guest', async (t) => {
      const arb = requestArb(cfg, tokens, 'files', {
        method: fc.constantFrom('GET', 'HEAD', 'PUT', 'POST', 'DELETE', 'PATCH', 'OPTIONS'),
        url: fc
          .tuple(fc.constantFrom('1', '01', '%31'), hostileFilePath, queryString)
          .map(([seat, f, q]) => `/proxy/seed/${seat}/files/${f}${q}`),
        body: fc.option(fc.oneof(malformedJson, fc.constantFrom('x'.repeat(BODY_LIMIT * 2))), { nil: undefined }),
        auth: cfg.token === undefined ? fc.constant(undefined) : fc.constantFrom(`Bearer ${AGENT_TOKEN}`, `Bearer ${genuineLearner}`),
      });
      const before = files.received.length;
      const outcomes = await batch(api, seeded, `files-${cfg.name}`, arb, 600, (r) => checkHostile(api, seeded, r, port));
      report(t, outcomes);
      const forwarded = files.received.slice(before);
      t.diagnostic(`${forwarded.length} requests reached the guest's file server`);
      assertReached(outcomes, ['403 forbidden_path', '200']);
      assert.ok(forwarded.length > 50, 'harmless paths do reach the guest');
      assertConfined(forwarded);
      assert.deepEqual(files.authorizations, [], 'no Authorization header reaches the guest');
    });

    if (cfg.token !== undefined) {
      test('garbage Authorization headers and bogus learner tokens open nothing they should not', async (t) => {
        const arb = fc
          .tuple(
            requestArb(cfg, tokens, 'auth', {
              method: fc.constantFrom('GET', 'POST', 'DELETE', 'PUT', 'HEAD'),
              body: fc.constant(undefined),
              // The genuine learner token of the seed often: it is the one closest to passing.
              auth: fc.oneof(
                fc.constant(`Bearer ${genuineLearner}`),
                authorizationHeader(tokens).filter((a) => a !== `Bearer ${AGENT_TOKEN}`),
              ),
              // Mostly the seed's own endpoints.
              url: fc.oneof(
                { weight: 1, arbitrary: url },
                {
                  weight: 2,
                  arbitrary: fc.constantFrom(
                    '/vms/seed/1',
                    '/vms/seed/1/token',
                    '/vms/seed/1/logs',
                    '/vms',
                    '/info',
                    '/proxy/seed/1/health',
                    '/proxy/seed/2/health',
                    '/proxy/seed/1/files/x',
                    '/proxy/seed/01/health',
                  ),
                },
              ),
            }),
            fc.option(fc.constantFrom(...tokens), { nil: undefined }),
          )
          .map(([r, queryToken]) =>
            queryToken === undefined
              ? r
              : new HostileRequest(
                  'auth-query',
                  r.method,
                  `${r.url}${r.url.includes('?') ? '&' : '?'}token=${encodeURIComponent(queryToken)}`,
                  r.headers,
                  r.payload,
                ),
          );
        const outcomes = await batch(api, seeded, `auth-${cfg.name}`, arb, 1000, (r) => checkHostile(api, seeded, r));
        report(t, outcomes);
        assertReached(outcomes, ['200', '401 unauthorized', '403 forbidden']);
        // Every learner token on every control endpoint, DELETE of the seed included: refused;
        // the seed's proxy opens to its genuine token only.
        for (const token of tokens) {
          for (const [m, u] of [
            ['DELETE', '/vms/seed/1'],
            ['GET', '/vms'],
            ['POST', '/vms/seed/1/token'],
            ['GET', '/info'],
            ['GET', '/proxy/seed/1/health'],
          ] as const) {
            const res = await send(api, new HostileRequest('token', m, u, { authorization: `Bearer ${token}` }, undefined));
            const opens = token === genuineLearner && u.startsWith('/proxy/seed/1/');
            assert.ok(opens ? res.status === 200 : [401, 403].includes(res.status), `${m} ${u} with ${token.slice(0, 60)}: ${res.status}`);
            if (!opens) assertErrorShape(res.status, res.contentType, res.body, `${m} ${u}`);
          }
        }
        assert.deepEqual(snapshot(api), seeded);
      });
    }

    test('valid creates and deletes interleaved with hostile requests: the state is exactly what the valid calls made', async (t) => {
      let created = 0;
      let deleted = 0;
      type Step = { valid: true; op: 'create' | 'delete'; seat: number; wait: boolean } | { valid: false; request: HostileRequest };
      const step: fc.Arbitrary<Step> = fc.oneof(
        fc.record({
          valid: fc.constant(true as const),
          op: fc.constantFrom('create' as const, 'delete' as const),
          seat: fc.integer({ min: 1, max: 4 }),
          wait: fc.boolean(),
        }),
        requestArb(cfg, tokens, 'interleaved', {}).map((request) => ({ valid: false as const, request })),
      );
      await fc.assert(
        fc.asyncProperty(fc.array(step, { minLength: 1, maxLength: 12 }), async (steps) => {
          const model = new Set<number>();
          try {
            for (const s of steps) {
              if (!s.valid) {
                const res = await send(api, s.request);
                const what = `${s.request.method} ${s.request.url}: ${res.status}`;
                assert.ok(res.status < 500, `${what} ${res.body.slice(0, 200)}`);
                if (res.status >= 400 && s.request.method !== 'HEAD') assertErrorShape(res.status, res.contentType, res.body, what);
              } else if (s.op === 'create') {
                const body = {
                  workshop_id: 'fz-model',
                  seat_id: s.seat,
                  memory_mb: 128,
                  ...(s.wait ? { wait: 'ready', wait_timeout_s: 5 } : {}),
                };
                const res = await api.app.inject({
                  method: 'POST',
                  url: '/vms',
                  headers: { ...auth, 'content-type': 'application/json' },
                  payload: body,
                });
                assert.equal(res.statusCode, model.has(s.seat) ? 409 : 201, res.body);
                if (res.statusCode === 201) created++;
                model.add(s.seat);
              } else {
                const res = await api.app.inject({ method: 'DELETE', url: `/vms/fz-model/${s.seat}`, headers: auth });
                assert.equal(res.statusCode, model.has(s.seat) ? 204 : 404, res.body);
                if (res.statusCode === 204) deleted++;
                model.delete(s.seat);
              }
              const now = snapshot(api);
              assert.deepEqual(
                now.vms.filter((vm) => vm.workshopId === SEED_WS),
                seeded.vms,
              );
              assert.deepEqual(
                now.vms.filter((vm) => vm.workshopId === 'fz-model').map((vm) => vm.seatId),
                [...model].sort((a, b) => a - b),
              );
              assert.equal(now.taps.length, 1 + model.size);
              assert.equal(now.dirs.length, 1 + model.size);
              await assertHealthy(api, 1 + model.size);
            }
          } finally {
            for (const seat of model) await api.app.inject({ method: 'DELETE', url: `/vms/fz-model/${seat}`, headers: auth });
          }
          assert.deepEqual(snapshot(api), seeded);
        }),
        runParameters(`model-${cfg.name}`, 40),
      );
      t.diagnostic(`${created} VMs created and ${deleted} deleted by valid calls among the hostile ones`);
      assert.ok(created > 10 && deleted > 5);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// WebSocket upgrades over real sockets.

class UpgradeRequest {
  constructor(
    readonly target: string,
    readonly headers: readonly string[],
    readonly framing: 'http' | 'garbage',
    readonly reset: boolean,
    readonly method: string,
    /** Passes the agent's checks; only the WebSocket handshake refuses it (see reachesSeedTerminal). */
    readonly handshakeOnly = false,
  ) {}

  bytes(): Buffer {
    if (this.framing === 'garbage')
      return Buffer.from(`${this.method} ${this.target} HTTP/1.1\r\n${this.headers.join('\r\n')}\r\n\r\n`, 'utf8');
    return Buffer.from(`${this.method} ${this.target} HTTP/1.1\r\nHost: agent\r\n${this.headers.join('\r\n')}\r\n\r\n`, 'latin1');
  }

  [fc.toStringMethod](): string {
    return `${this.framing}${this.reset ? '+reset' : ''}${this.handshakeOnly ? '+handshake-only' : ''}: ${this.method} ${JSON.stringify(this.target.slice(0, 200))} ${JSON.stringify(this.headers).slice(0, 300)}`;
  }
}

/**
 * Whether the upgrade passes the agent's own checks (URL, token, seat) and reaches the seed's
 * terminal: then only the WebSocket handshake itself can still refuse it.
 */
function reachesSeedTerminal(u: UpgradeRequest, validLearner: string): boolean {
  if (u.framing !== 'http') return false;
  let url: URL;
  try {
    url = new URL(u.target, 'http://agent');
  } catch {
    return false;
  }
  const match = /^\/proxy\/([^/?]+)\/([^/?]+)\/terminal$/.exec(url.pathname);
  const seat = safeDecode(match?.[2] ?? '');
  if (!match || safeDecode(match[1] ?? '') !== SEED_WS || seat === undefined || !/^[0-9]{1,6}$/.test(seat) || Number(seat) !== 1)
    return false;
  const headerToken = u.headers.map((h) => /^authorization:\s*Bearer\s+(\S+)\s*$/i.exec(h)?.[1]).find((t) => t !== undefined);
  if (headerToken === AGENT_TOKEN) return true;
  return (headerToken ?? url.searchParams.get('token')) === validLearner && seat === '1';
}

describe('fuzz WebSocket upgrades', { timeout: 120_000 }, () => {
  test('hostile upgrade requests get an HTTP 4xx with the error shape; resets and garbage crash nothing', async (t) => {
    const api = await buildFuzzApi({ agentToken: AGENT_TOKEN, secret: SECRET, capacity: 50 });
    try {
      const created = await api.app.inject({
        method: 'POST',
        url: '/vms',
        headers: { authorization: `Bearer ${AGENT_TOKEN}`, 'content-type': 'application/json' },
        payload: { workshop_id: SEED_WS, seat_id: 1 },
      });
      assert.equal(created.statusCode, 201);
      const seeded = snapshot(api);
      await api.app.listen({ host: '127.0.0.1', port: 0 });
      const port = (api.app.server.address() as AddressInfo).port;
      const validLearner = genuineLearner;

      const terminalTarget = fc.oneof(
        { weight: 4, arbitrary: fc.tuple(workshopSegment, seatSegment, queryString).map(([w, s, q]) => `/proxy/${w}/${s}/terminal${q}`) },
        {
          weight: 3,
          arbitrary: fc
            .tuple(workshopSegment, seatSegment, fc.constantFrom(...tokens))
            .map(([w, s, t]) => `/proxy/${w}/${s}/terminal?token=${encodeURIComponent(t)}`),
        },
        {
          weight: 1,
          arbitrary: fc.constantFrom(
            '//a:99999/x',
            'http://[/x',
            '//[::1',
            'http://a:b@/',
            'http://agent:0/proxy/seed/1/terminal',
            '/proxy/seed/1/terminal/..',
            '/proxy/seed/1/terminal%00',
            '/proxy/../1/terminal',
            '/proxy/seed/1/terminal#x',
            '*',
            '/',
            '/health',
            '/vms',
            '/proxy/seed/1/files/x',
            '/proxy//1/terminal',
            '/proxy/seed//terminal',
            `/proxy/seed/1/terminal?token=${'A'.repeat(4000)}`,
          ),
        },
        { weight: 1, arbitrary: url },
      );
      const upgradeHeaders = fc
        .tuple(
          fc.subarray(
            ['Upgrade: websocket', 'Connection: Upgrade', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13'],
            { minLength: 2 },
          ),
          fc.option(
            authorizationHeader(tokens).map((a) => (a === undefined ? undefined : `Authorization: ${a}`)),
            { nil: undefined },
          ),
          fc.option(
            fc.constantFrom(
              'Upgrade: h2c',
              'Sec-WebSocket-Version: 99',
              'Sec-WebSocket-Key: x',
              'Content-Length: 5',
              `X-Big: ${'b'.repeat(2000)}`,
            ),
            { nil: undefined },
          ),
        )
        .map(([base, authH, extra]) => [
          ...(base.some((h) => h.startsWith('Connection')) ? base : [...base, 'Connection: Upgrade']),
          ...(base.some((h) => h.startsWith('Upgrade')) ? [] : ['Upgrade: websocket']),
          ...(authH ? [authH] : []),
          ...(extra ? [extra] : []),
        ]);
      const upgrade = fc
        .record({
          target: terminalTarget,
          headers: upgradeHeaders,
          framing: fc.constantFrom('http' as const, 'http' as const, 'http' as const, 'garbage' as const),
          junk: fc.constantFrom('é', '\u0001', ' x', '\u007f', '\u0000'), // makes the request line invalid HTTP
          reset: fc.boolean(), // half of them reset the connection right after sending
          method: fc.oneof(
            { weight: 5, arbitrary: fc.constant('GET') },
            { weight: 1, arbitrary: fc.constantFrom('POST', 'PUT', 'OPTIONS', 'DELETE') },
          ),
        })
        .map(
          (u) => new UpgradeRequest(u.framing === 'garbage' ? `${u.target}${u.junk}` : u.target, u.headers, u.framing, u.reset, u.method),
        )
        .map((u) =>
          // An upgrade the agent lets through must not open the terminal here: without its key
          // the handshake fails (ws answers 400 itself), which still has to be a clean 4xx.
          reachesSeedTerminal(u, validLearner)
            ? new UpgradeRequest(
                u.target,
                u.headers.filter((h) => !/^sec-websocket-key:/i.test(h)),
                u.framing,
                u.reset,
                u.method,
                true,
              )
            : u,
        );

      let answered = 0;
      let resets = 0;
      const outcomes = new Map<string, number>();
      await fc.assert(
        fc.asyncProperty(fc.array(upgrade, { minLength: 1, maxLength: 8 }), async (requests) => {
          // A handful at once: resets interleave with answers.
          const results = await Promise.all(requests.map((u) => rawHttp(port, u.bytes(), { reset: u.reset })));
          requests.forEach((u, i) => {
            const result = results[i];
            assert.ok(result);
            if (u.reset) {
              resets++;
              return;
            }
            const what = `${u[fc.toStringMethod]()} -> ${result.status ?? 'no answer'} ${result.body.slice(0, 200)}`;
            assert.ok(result.status !== undefined && result.status >= 400 && result.status < 500, `${what}: an HTTP 4xx`);
            answered++;
            // Requests that are not even HTTP, or whose headers exceed Node's 16 KiB, are refused
            // by the HTTP parser (Fastify's client-error body); the agent's upgrade handler
            // answers all others with the API's error shape.
            const code =
              u.framing !== 'http'
                ? ' (not HTTP)'
                : u.bytes().length > 15_000
                  ? ' (headers over 16 KiB)' // refused by Node's HTTP parser, like garbage
                  : u.handshakeOnly
                    ? ' (handshake)'
                    : ` ${assertErrorShape(result.status, result.headers['content-type'], result.body, what)}`;
            outcomes.set(`${result.status}${code}`, (outcomes.get(`${result.status}${code}`) ?? 0) + 1);
          });
          assert.equal((await api.app.inject({ url: '/health' })).statusCode, 200);
        }),
        runParameters('upgrade', 150),
      );
      report(t, outcomes);
      t.diagnostic(`${resets} connections reset by the client right after their upgrade request`);
      assert.ok(answered > 50 && resets > 50, `enough upgrades answered (${answered}) and reset (${resets})`);
      assertReached(outcomes, [
        '400 invalid_field',
        '400 invalid_request',
        '401 unauthorized',
        '403 forbidden',
        '404 not_found',
        '404 vm_not_found',
      ]);
      // The server still serves real connections, and nothing changed.
      const health = await fetch(`http://127.0.0.1:${port}/health`);
      assert.equal(health.status, 200);
      assert.deepEqual(snapshot(api), seeded);
      assert.equal(api.app.server.listening, true);
    } finally {
      await api.close();
    }
  });
});

describe('hostile inputs that once crashed the agent or broke the error shape', () => {
  test('upgrade: unparsable URLs, odd seat spellings, and clients that reset', async () => {
    const api = await buildFuzzApi({ agentToken: AGENT_TOKEN, secret: SECRET, capacity: 5 });
    try {
      const agent = { authorization: `Bearer ${AGENT_TOKEN}` };
      assert.equal(
        (
          await api.app.inject({
            method: 'POST',
            url: '/vms',
            headers: { ...agent, 'content-type': 'application/json' },
            payload: { workshop_id: SEED_WS, seat_id: 1 },
          })
        ).statusCode,
        201,
      );
      await api.app.listen({ host: '127.0.0.1', port: 0 });
      const port = (api.app.server.address() as AddressInfo).port;
      const handshake = [
        'Upgrade: websocket',
        'Connection: Upgrade',
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
        'Sec-WebSocket-Version: 13',
      ];
      const cases: [string, number, string][] = [
        ['//a:99999/x', 400, 'invalid_request'], // new URL() threw inside the 'upgrade' listener: the process died
        ['http://[/x', 400, 'invalid_request'],
        ['/proxy/seed/1e0/terminal', 400, 'invalid_field'], // Number("1e0") is 1: the REST routes refuse such a seat
        ['/proxy/seed/0x1/terminal', 400, 'invalid_field'],
        ['/proxy/seed/1.0/terminal', 400, 'invalid_field'],
        ['/proxy/seed/2/terminal', 404, 'vm_not_found'],
      ];
      for (const [target, status, code] of cases) {
        const res = await rawHttp(
          port,
          new UpgradeRequest(target, [...handshake, `Authorization: Bearer ${AGENT_TOKEN}`], 'http', false, 'GET').bytes(),
        );
        assert.equal(res.status, status, `${target}: ${res.body}`);
        assert.equal(assertErrorShape(res.status, res.headers['content-type'], res.body, target), code);
      }
      // Clients that reset right after their upgrade request: the rejection's write failed with
      // ECONNRESET on a socket without an error listener, an uncaught exception.
      const resets = [];
      for (let i = 0; i < 200; i++) {
        const target = i % 2 === 0 ? '/nope' : `/proxy/seed/1/terminal?token=${'x'.repeat(i)}`;
        resets.push(rawHttp(port, new UpgradeRequest(target, handshake, 'http', true, 'GET').bytes(), { reset: true }));
        if (resets.length === 20) await Promise.all(resets.splice(0));
      }
      await Promise.all(resets);
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal((await fetch(`http://127.0.0.1:${port}/health`)).status, 200);
    } finally {
      await api.close();
    }
  });

  test('HTTP: malformed percent-encoding and overlong parameters get {error, code}', async () => {
    const api = await buildFuzzApi({ agentToken: undefined, secret: SECRET, capacity: 5 });
    try {
      for (const [url, status] of [
        ['/vms/seed/%ff', 400],
        ['/%ff', 400],
        ['/proxy/seed/1/files/%ff', 400],
        [`/vms/seed/${'1'.repeat(201)}`, 414],
      ] as const) {
        const res = await api.app.inject({ url });
        assert.equal(res.statusCode, status, url);
        assert.equal(assertErrorShape(res.statusCode, String(res.headers['content-type']), res.body, url), 'invalid_request');
      }
    } finally {
      await api.close();
    }
  });
});
