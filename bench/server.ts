// The workshop server's extra hop: a learner's files and terminal through the server (its
// /proxy/, with the learner's cookie) against the same through the agent directly. One real
// agent (QEMU guests), the server in this process on its embedded database, two learners.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { startServer } from '../src/cli/server.ts';
import { loadServerConfig } from '../src/server-config/config.ts';
import { SqlWorkshopRepository } from '../src/server-db/repository.ts';
import { hashPassword } from '../src/server-api/passwords.ts';
import type { BenchAgent } from './agent.ts';
import { keystrokesSideBySide, addThroughputRow, throughputs, upload, type Headers } from './proxy.ts';
import { median, ms, p95, type Results } from './stats.ts';

const PASSWORD = 'bench-password-long-enough';

async function post(url: string, body: unknown, headers: Headers = {}): Promise<Response> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  if (res.status >= 300) throw new Error(`POST ${url}: ${res.status} ${await res.text()}`);
  return res;
}

export async function serverBench(agent: BenchAgent, results: Results): Promise<void> {
  process.stdout.write('\n## workshop server hop against the agent direct\n');
  const dir = mkdtempSync(join(tmpdir(), 'ct-bench-server-'));
  const server = await startServer(loadServerConfig({ DATA_DIR: join(dir, 'db'), PORT: '0', JOIN_RATE_LIMIT: '1000' }), {
    log: pino({ level: 'warn' }),
  });
  try {
    await new SqlWorkshopRepository(server.db).addInstructor('in-bench', 'bench@example.org', await hashPassword(PASSWORD));
    const login = await post(`${server.url}/api/login`, { email: 'bench@example.org', password: PASSWORD, bearer: true });
    const auth = { authorization: `Bearer ${((await login.json()) as { session_token: string }).session_token}` };
    await post(`${server.url}/api/workers`, { url: agent.url, id: 'bench' }, auth);
    const created = await post(
      `${server.url}/api/workshops`,
      { name: 'bench', seats: 2, memory_mb: 512, ends_at: new Date(Date.now() + 3_600_000).toISOString() },
      auth,
    );
    const workshop = (await created.json()) as { id: string; join_code: string };
    await server.service.settled();
    // Two learners, one per seat: a learner's cookie opens their own seat only.
    const cookieOf = new Map<number, string>();
    for (const name of ['one', 'two']) {
      const joined = await post(`${server.url}/api/join`, { code: workshop.join_code, name });
      const seat = ((await joined.clone().json()) as { seat: { seat_id: number } }).seat.seat_id;
      cookieOf.set(seat, (joined.headers.getSetCookie()[0] ?? '').split(';')[0] ?? '');
    }
    const seats = [...cookieOf.keys()].sort();
    for (const seat of seats) await agent.waitReady(workshop.id, seat);
    const big = randomBytes(64 * 1024 * 1024);
    const small = big.subarray(0, 4 * 1024 * 1024);
    const viaAgent = (seat: number, path: string): string => `${agent.url}/proxy/${workshop.id}/${seat}/${path}`;
    const viaServer = (seat: number, path: string): string => `${server.url}/proxy/${workshop.id}/${seat}/${path}`;
    for (const seat of seats) {
      await upload(viaAgent(seat, 'files/big.bin'), big);
      await upload(viaAgent(seat, 'files/small.bin'), small);
    }
    const serverHost = new URL(server.url).host;
    const headersOf = (url: string): Headers => {
      const parsed = new URL(url);
      if (parsed.host !== serverHost) return {};
      return { cookie: cookieOf.get(Number(parsed.pathname.split('/')[3])) ?? '' };
    };
    const [a = 1, b = 2] = seats;
    const one = await throughputs([viaAgent(a, 'files/big.bin')], [viaServer(a, 'files/big.bin')], big.length, 7, headersOf);
    addThroughputRow(
      results,
      'server',
      'download 64 MiB, 1 session (baseline: the agent direct; ratio: median of the rounds)',
      ['agent', 'server'],
      one,
    );
    const fifty = (to: (seat: number, p: string) => string): string[] =>
      Array.from({ length: 50 }, (_, i) => to(i % 2 ? b : a, 'files/small.bin'));
    const many = await throughputs(fifty(viaAgent), fifty(viaServer), small.length, 3, headersOf);
    addThroughputRow(
      results,
      'server',
      'download 4 MiB × 50 at once, total (baseline: the agent direct; ratio: median of the rounds)',
      ['agent', 'server'],
      many,
    );
    for (const sessions of [1, 50]) {
      const urls = (to: (seat: number, p: string) => string): string[] =>
        // The same shells both ways: each run re-attaches to the sessions the first one made.
        Array.from({ length: sessions }, (_, i) =>
          to(i % 2 ? b : a, `terminal?session=bench-server-${sessions}-${i}`).replace('http:', 'ws:'),
        );
      const [direct, hop] = await keystrokesSideBySide(urls(viaAgent), urls(viaServer), sessions === 1 ? 50 : 10, 4, headersOf);
      results.add(
        'server',
        `keystroke round trip, ${sessions} session${sessions > 1 ? 's' : ''}, side by side (4 rounds), median / p95 (added: ${ms(median(hop) - median(direct))})`,
        `agent ${ms(median(direct))} / ${ms(p95(direct))}`,
        `server ${ms(median(hop))} / ${ms(p95(hop))}`,
        median(hop) / median(direct),
      );
    }
    await post(`${server.url}/api/workshops/${workshop.id}/end`, {}, auth);
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
