// Downloads through the agent with the kernel relay open (a real eBPF sockmap: the CI runs as
// root), from the real guest file server on a loopback address (nothing leaves lo). The relay is
// wrapped only to count what the proxy asked of it.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { connect, createServer as createNetServer, type AddressInfo, type Server as NetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Client, request } from 'undici';
import { buildTestApi, type TestApi } from '../../test/support/api.ts';
import { GUEST_PORTS } from '../guest/contract.ts';
import { startFilesServer, type RunningServer } from '../guest/files/server.ts';
import { silentLogger } from '../guest/shared/log.ts';
import { openKernelRelay } from '../host/kernel-relay.ts';
import type { SocketJoiner } from './downloads.ts';

const SUBNET = `127.${64 + (process.pid % 128)}.${1 + Math.floor(Math.random() * 250)}`;
const MiB = 1024 * 1024;
const sha256 = (bytes: Buffer): string => createHash('sha256').update(bytes).digest('hex');

/** A whole HTTP/1.1 answer read off a raw socket (the test controls when it reads). */
async function rawGet(url: URL, o: { pauseMs?: number; readBytes?: number } = {}): Promise<{ head: string; body: Buffer }> {
  const socket = connect(Number(url.port), url.hostname);
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
  socket.write(`GET ${url.pathname} HTTP/1.1\r\nHost: ${url.host}\r\nConnection: close\r\n\r\n`);
  if (o.pauseMs !== undefined) {
    socket.pause(); // nothing read: the agent's socket to this client fills up
    await sleep(o.pauseMs);
  }
  const chunks: Buffer[] = [];
  let received = 0;
  await new Promise<void>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      received += chunk.length;
      if (o.readBytes !== undefined && received >= o.readBytes) {
        socket.destroy();
        resolve();
      }
    });
    socket.once('end', resolve);
    socket.once('error', reject);
    socket.resume();
  });
  const all = Buffer.concat(chunks);
  const headEnd = all.indexOf('\r\n\r\n');
  return { head: all.subarray(0, headEnd).toString('latin1'), body: all.subarray(headEnd + 4) };
}

describe('downloads joined in the kernel', () => {
  const opened = openKernelRelay();
  const calls = { joins: 0, refusedJoins: 0, allows: 0, leaves: 0, overs: 0 };
  let failJoins = false;
  let connectionsSeen = 0; // by seat 6's file server
  let guestConnections = 0;
  let api: TestApi;
  let files: RunningServer;
  let olderGuest: Server;
  let rogueGuest: NetServer;
  let shortGuest: NetServer;
  let firstVersionGuest: NetServer;
  let droppingGuest: NetServer;
  let dir: string;
  let base: string;
  const content = { big: randomBytes(6 * MiB), huge: randomBytes(48 * MiB), small: randomBytes(10 * 1024) };

  before(async () => {
    const relay = opened.joiner;
    assert.ok(relay, `the kernel relay must open here (root, sockmap): ${'reason' in opened ? opened.reason : ''}`);
    const joiner: SocketJoiner = {
      join: (guestFd, clientFd, limit) => {
        if (failJoins) {
          calls.refusedJoins++;
          throw new Error('the sockmap is full (test)');
        }
        calls.joins++;
        return relay.join(guestFd, clientFd, limit);
      },
      allow: (handle, limit) => (calls.allows++, relay.allow(handle, limit)),
      leave: (handle) => (calls.leaves++, relay.leave(handle)),
      relayed: (handle) => {
        const bytes = relay.relayed(handle);
        if (bytes < 0) calls.overs++;
        return bytes;
      },
      queued: (fd) => relay.queued(fd),
    };
    dir = mkdtempSync(join(tmpdir(), 'ct-downloads-'));
    for (const [name, bytes] of Object.entries(content)) writeFileSync(join(dir, `${name}.bin`), bytes);
    files = await startFilesServer({
      config: { host: `${SUBNET}.11`, port: GUEST_PORTS.files, workspaceDir: dir, maxUploadBytes: MiB },
      logger: silentLogger,
    });
    files.server.on('connection', () => guestConnections++);
    // Seat 2 runs a file server from before the handshake: it streams at once, whatever was asked.
    olderGuest = createServer((_request, response) => {
      response.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(content.big.length) });
      response.end(content.big);
    });
    await new Promise<void>((resolve) => olderGuest.listen(GUEST_PORTS.files, `${SUBNET}.12`, resolve));
    // Seat 3 runs a file server that holds, then sends 48 MiB at once whatever credit it was given.
    rogueGuest = createNetServer((socket) => {
      socket.once('data', () => {
        socket.write(`HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-clarateach-held: ${content.huge.length}\r\n\r\n`);
        socket.once('data', () => socket.end(content.huge)); // the first credit line: the release
      });
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => rogueGuest.listen(GUEST_PORTS.files, `${SUBNET}.13`, resolve));
    // Seat 4's file server holds, then sends half of what it announced and hangs up.
    shortGuest = createNetServer((socket) => {
      socket.once('data', () => {
        socket.write(`HTTP/1.1 200 OK\r\ncontent-length: 0\r\nx-clarateach-held: ${content.big.length}\r\n\r\n`);
        socket.once('data', () => socket.end(content.big.subarray(0, content.big.length / 2)));
      });
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => shortGuest.listen(GUEST_PORTS.files, `${SUBNET}.14`, resolve));
    // Seat 5's file server speaks the handshake's first version: the body inside HTTP's framing,
    // marked `x-clarateach-held: 1`, sent once the request body ends (or as credit comes).
    firstVersionGuest = createNetServer((socket) => {
      let heard = '';
      let answered = false;
      socket.on('data', (chunk: Buffer) => {
        heard += chunk.toString('latin1');
        if (heard.includes('\r\n\r\n') && !answered) {
          answered = true;
          socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${content.big.length}\r\nx-clarateach-held: 1\r\nconnection: close\r\n\r\n`);
        }
        if (heard.includes('\r\n0\r\n\r\n') && !socket.writableEnded) socket.end(content.big);
      });
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => firstVersionGuest.listen(GUEST_PORTS.files, `${SUBNET}.15`, resolve));
    // Seat 6's file server resets its first connection when a second request comes on it: a kept
    // connection that the guest dropped while it sat in the agent's pool.
    droppingGuest = createNetServer((socket) => {
      const first = ++connectionsSeen === 1;
      let requests = 0;
      socket.on('data', (chunk: Buffer) => {
        for (let at = chunk.indexOf('GET '); at >= 0; at = chunk.indexOf('GET ', at + 4)) {
          if (first && ++requests === 2) return void socket.resetAndDestroy();
          socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nkeep-alive: timeout=60\r\n\r\nok');
        }
      });
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => droppingGuest.listen(GUEST_PORTS.files, `${SUBNET}.16`, resolve));
    api = await buildTestApi({ agentToken: undefined, capacity: 6, cidr: `${SUBNET}.1/24`, guestAnswers: true, joiner });
    for (const seat of [1, 2, 3, 4, 5, 6]) {
      const created = await api.app.inject({ method: 'POST', url: '/vms', payload: { workshop_id: 'ws', seat_id: seat } });
      assert.equal(created.statusCode, 201, created.body);
    }
    await api.app.listen({ port: 0, host: '127.0.0.1' });
    base = `http://127.0.0.1:${(api.app.server.address() as AddressInfo).port}/proxy/ws`;
  });

  after(async () => {
    await api?.close();
    await files?.close();
    await new Promise<void>((resolve) => (olderGuest ? olderGuest.close(() => resolve()) : resolve()));
    await new Promise<void>((resolve) => (rogueGuest ? rogueGuest.close(() => resolve()) : resolve()));
    await new Promise<void>((resolve) => (shortGuest ? shortGuest.close(() => resolve()) : resolve()));
    await new Promise<void>((resolve) => (firstVersionGuest ? firstVersionGuest.close(() => resolve()) : resolve()));
    await new Promise<void>((resolve) => (droppingGuest ? droppingGuest.close(() => resolve()) : resolve()));
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('a 6 MiB file arrives whole, with the agent head and sandbox, its bytes relayed in the kernel and counted', async () => {
    const before = { ...calls };
    const answer = await request(`${base}/1/files/big.bin`, { headers: { 'x-request-id': 'download-1' } });
    const body = Buffer.from(await answer.body.arrayBuffer());
    assert.equal(answer.statusCode, 200);
    assert.equal(sha256(body), sha256(content.big));
    assert.equal(answer.headers['content-length'], String(content.big.length));
    assert.equal(answer.headers['x-request-id'], 'download-1');
    assert.match(String(answer.headers['content-security-policy']), /sandbox/);
    assert.equal(answer.headers['x-content-type-options'], 'nosniff');
    assert.equal(answer.headers['x-clarateach-held'], undefined, 'the handshake stays between agent and guest');
    assert.equal(answer.headers.connection, 'keep-alive');
    assert.equal(calls.joins - before.joins, 1);
    await waitFor(() => calls.leaves - before.leaves === 1);
    const metrics = await (await request(`${base.replace('/proxy/ws', '')}/metrics`)).body.text();
    const counted = /clarateach_proxy_bytes_total\{service="files",direction="from_guest"\} (\d+)/.exec(metrics);
    assert.ok(counted, metrics);
    assert.ok(Number(counted[1]) >= content.big.length, `counted ${counted[1]}`);
  });

  it('a 2 MiB range is joined and is that range; a small file and a listing go through the agent', async () => {
    const before = { ...calls };
    const ranged = await request(`${base}/1/files/huge.bin`, { headers: { range: `bytes=${MiB}-${3 * MiB - 1}` } });
    assert.equal(ranged.statusCode, 206);
    assert.equal(ranged.headers['content-range'], `bytes ${MiB}-${3 * MiB - 1}/${content.huge.length}`);
    assert.equal(sha256(Buffer.from(await ranged.body.arrayBuffer())), sha256(content.huge.subarray(MiB, 3 * MiB)));
    assert.equal(calls.joins - before.joins, 1);

    const small = await request(`${base}/1/files/small.bin`);
    assert.equal(sha256(Buffer.from(await small.body.arrayBuffer())), sha256(content.small));
    const listing = await request(`${base}/1/files/`);
    const names = ((await listing.body.json()) as { entries: { name: string }[] }).entries.map((entry) => entry.name);
    assert.deepEqual(names.sort(), ['big.bin', 'huge.bin', 'small.bin']);
    const missing = await request(`${base}/1/files/nothing.bin`);
    assert.equal(missing.statusCode, 404);
    await missing.body.dump();
    assert.equal(calls.joins - before.joins, 1, 'small answers are not joined');
  });

  it('a client that does not read for a while still gets all 48 MiB: the guest sends as the client takes', async () => {
    const before = { ...calls };
    const { head, body } = await rawGet(new URL(`${base}/1/files/huge.bin`), { pauseMs: 1500 });
    assert.match(head, /^HTTP\/1\.1 200/);
    assert.equal(body.length, content.huge.length);
    assert.equal(sha256(body), sha256(content.huge));
    assert.equal(calls.joins - before.joins, 1);
    assert.ok(calls.allows - before.allows >= 4, `credit given ${calls.allows - before.allows} times after the first 8 MiB`);
    assert.equal(calls.overs, 0);
  });

  it('a guest that sends past its credit has its download ended, and never more than its credit waits in the kernel', async () => {
    const before = { ...calls };
    const { head, body } = await rawGet(new URL(`${base}/3/files/huge.bin`), { pauseMs: 1500 });
    assert.match(head, /^HTTP\/1\.1 200/);
    assert.ok(body.length < content.huge.length, `the client got ${body.length} bytes`);
    assert.equal(calls.joins - before.joins, 1);
    assert.ok(calls.overs - before.overs >= 1, 'the kernel dropped what went past the credit');
    await waitFor(() => calls.leaves - before.leaves === 1);
  });

  // The test's timeout is under the 2 minutes after which a stalled download is ended: the hang-up
  // itself must be seen (the guest's socket is in the sockmap, its end must still reach the agent).
  it('a guest that hangs up early: the client gets what was sent, then its connection closed', { timeout: 60_000 }, async () => {
    const before = { ...calls };
    const { head, body } = await rawGet(new URL(`${base}/4/files/big.bin`));
    assert.match(head, /^HTTP\/1\.1 200/);
    assert.equal(sha256(body), sha256(content.big.subarray(0, content.big.length / 2)));
    assert.equal(calls.joins - before.joins, 1);
  });

  it('a client that leaves midway frees the join, and the next download is whole', async () => {
    const before = { ...calls };
    const { body } = await rawGet(new URL(`${base}/1/files/huge.bin`), { readBytes: 2 * MiB });
    assert.ok(body.length > 0);
    await waitFor(() => calls.leaves - before.leaves === 1);
    const again = await request(`${base}/1/files/big.bin`);
    assert.equal(sha256(Buffer.from(await again.body.arrayBuffer())), sha256(content.big));
  });

  it('downloads one after another on one client connection are each joined, over one connection to the guest', async () => {
    await waitFor(() => calls.joins === calls.leaves); // the downloads before have ended
    const before = { ...calls };
    const guestBefore = guestConnections;
    const client = new Client(base.replace('/proxy/ws', ''), { pipelining: 1 });
    let connects = 0;
    client.on('connect', () => connects++);
    try {
      for (const name of ['big', 'huge', 'big'] as const) {
        const answer = await client.request({ method: 'GET', path: `/proxy/ws/1/files/${name}.bin` });
        assert.equal(answer.statusCode, 200);
        assert.equal(sha256(Buffer.from(await answer.body.arrayBuffer())), sha256(content[name]));
      }
      const listing = await client.request({ method: 'GET', path: '/proxy/ws/1/files/' });
      assert.equal(listing.statusCode, 200, 'the connection serves the next request after a joined download');
      await listing.body.dump();
    } finally {
      await client.close();
    }
    assert.equal(calls.joins - before.joins, 3);
    assert.equal(calls.leaves - before.leaves, 3);
    assert.equal(connects, 1, 'one connection to the agent');
    assert.ok(guestConnections - guestBefore <= 1, `${guestConnections - guestBefore} new connections to the guest`);
  });

  it('a held answer the kernel cannot join is asked for again and relayed by the agent, whole', async () => {
    const before = { ...calls };
    failJoins = true;
    try {
      const answer = await request(`${base}/1/files/big.bin`);
      assert.equal(answer.statusCode, 200);
      assert.equal(answer.headers['content-length'], String(content.big.length));
      assert.equal(sha256(Buffer.from(await answer.body.arrayBuffer())), sha256(content.big));
    } finally {
      failJoins = false;
    }
    assert.equal(calls.refusedJoins - before.refusedJoins, 1, 'the guest held it, and the join was tried');
    assert.equal(calls.joins - before.joins, 0);
  });

  it('a guest from before the handshake (streams at once) is relayed by the agent, whole', async () => {
    const before = { ...calls };
    const answer = await request(`${base}/2/files/big.bin`);
    assert.equal(answer.statusCode, 200);
    assert.equal(sha256(Buffer.from(await answer.body.arrayBuffer())), sha256(content.big));
    assert.equal(calls.joins - before.joins, 0);
  });

  it("a guest of the handshake's first version (its body inside HTTP's framing) is relayed by the agent, whole", async () => {
    const before = { ...calls };
    const answer = await request(`${base}/5/files/big.bin`);
    assert.equal(answer.statusCode, 200);
    assert.equal(sha256(Buffer.from(await answer.body.arrayBuffer())), sha256(content.big));
    assert.equal(calls.joins - before.joins, 0);
  });

  it('a kept connection the guest dropped meanwhile costs the client nothing: the GET goes again on a new one', async () => {
    for (let i = 0; i < 3; i++) {
      const answer = await request(`${base}/6/files/note.txt`);
      assert.equal(answer.statusCode, 200);
      assert.equal(await answer.body.text(), 'ok');
    }
    assert.equal(connectionsSeen, 2, 'the kept connection was used again, dropped, and the GET sent on a new one');
  });
});

async function waitFor(condition: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await sleep(20);
  }
}
