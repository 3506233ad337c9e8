// Uploads through the files proxy as operators make them: curl with `--data-binary @file` and
// `-T file`, which send `Expect: 100-continue` for bodies over 1 MiB. The bytes must reach the
// guest's file server whole. The guest is a stand-in on a loopback address (nothing leaves lo).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildFuzzApi, FIRST_VM_IP } from '../../test/support/fuzz.ts';
import { FILES_PORT } from './guest.ts';

test('curl uploads of 3 MiB (Expect: 100-continue) reach the guest whole, with --data-binary and with -T', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ct-upload-'));
  const api = await buildFuzzApi({ agentToken: undefined, secret: undefined, capacity: 2 });
  const received: { method: string; url: string; sha256: string; bytes: number; expect: string | undefined }[] = [];
  const guest = createServer((request, response) => {
    const hash = createHash('sha256');
    let bytes = 0;
    request.on('data', (chunk: Buffer) => {
      hash.update(chunk);
      bytes += chunk.length;
    });
    request.on('end', () => {
      const expect = request.headers.expect;
      received.push({ method: request.method ?? '', url: request.url ?? '', sha256: hash.digest('hex'), bytes, expect });
      response.writeHead(201, { 'content-type': 'application/json' });
      response.end('{"ok":true}');
    });
  });
  await new Promise<void>((resolve) => guest.listen(FILES_PORT, FIRST_VM_IP, resolve));
  try {
    const created = await api.app.inject({ method: 'POST', url: '/vms', payload: { workshop_id: 'ws', seat_id: 1 } });
    assert.equal(created.statusCode, 201, created.body);
    await api.app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = api.app.server.address() as AddressInfo;
    const content = randomBytes(3 * 1024 * 1024);
    const file = join(dir, 'big.bin');
    writeFileSync(file, content);
    const base = `http://127.0.0.1:${port}/proxy/ws/1/files`;
    // Not execFileSync: the agent and the stand-in guest answer from this very process.
    const curl = async (...args: string[]): Promise<string> =>
      (await promisify(execFile)('curl', ['-sS', '-o', '/dev/null', '-w', '%{http_code}', ...args], { timeout: 30_000 })).stdout;

    assert.equal(await curl('-X', 'PUT', '--data-binary', `@${file}`, `${base}/big.bin`), '201');
    assert.equal(await curl('-T', file, `${base}/copy.bin`), '201');

    const sha = createHash('sha256').update(content).digest('hex');
    assert.deepEqual(
      received.map((r) => [r.method, r.url, r.bytes, r.sha256]),
      [
        ['PUT', '/files/big.bin', content.length, sha],
        ['PUT', '/files/copy.bin', content.length, sha],
      ],
    );
  } finally {
    await api.close();
    await new Promise<void>((resolve) => guest.close(() => resolve()));
    rmSync(dir, { recursive: true, force: true });
  }
});
