// The Firecracker API client against a plain HTTP server on a unix socket: bodies, answers, fault messages.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { FirecrackerApiClient, FirecrackerApiError, socketAnswers } from './api-client.ts';

interface Seen {
  readonly method: string;
  readonly url: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

describe('FirecrackerApiClient', () => {
  let dir: string;
  let socketPath: string;
  let server: Server;
  const seen: Seen[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'fc-client-'));
    socketPath = join(dir, 'api.sock');
    server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString() });
        if (req.url === '/') {
          res.writeHead(200, { 'Content-Type': 'application/json' });
          res.end(JSON.stringify({ app_name: 'Firecracker', id: 'x', state: 'Running', vmm_version: '1.8.0' }));
        } else if (req.url === '/boot-source') {
          res.writeHead(400, { 'Content-Type': 'application/json' });
          res.end(
            JSON.stringify({
              fault_message: 'Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)',
            }),
          );
        } else if (req.url === '/slow') {
          setTimeout(() => res.end(), 2_000);
        } else {
          res.writeHead(204);
          res.end();
        }
      });
    });
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  });

  after(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });

  test('sends JSON with a Content-Length (micro_http takes no chunked bodies)', async () => {
    const client = new FirecrackerApiClient(socketPath);
    await client.putGuestDriveByID({ drive_id: 'base', path_on_host: '/b', is_root_device: false, is_read_only: true });
    const request = seen.at(-1);
    assert.equal(request?.method, 'PUT');
    assert.equal(request?.url, '/drives/base');
    assert.equal(request?.headers['content-type'], 'application/json');
    assert.equal(request?.headers['content-length'], String(Buffer.byteLength(request?.body ?? '')));
    assert.equal(request?.headers['transfer-encoding'], undefined);
    assert.deepEqual(JSON.parse(request?.body ?? ''), { drive_id: 'base', path_on_host: '/b', is_root_device: false, is_read_only: true });
  });

  test('returns parsed answers', async () => {
    const info = await new FirecrackerApiClient(socketPath).describeInstance();
    assert.equal(info.state, 'Running');
    assert.equal(seen.at(-1)?.body, '', 'a GET carries no body');
  });

  test("errors carry the status and Firecracker's fault_message", async () => {
    const client = new FirecrackerApiClient(socketPath);
    const error = await client.putGuestBootSource({ kernel_image_path: '/nope' }).then(
      () => assert.fail('expected a rejection'),
      (e: unknown) => e,
    );
    assert.ok(error instanceof FirecrackerApiError);
    assert.equal(error.statusCode, 400);
    assert.equal(error.faultMessage, 'Boot source error: The kernel file cannot be opened: No such file or directory (os error 2)');
    assert.match(error.message, /PUT \/boot-source failed \(400\): Boot source error: The kernel file cannot be opened/);
  });

  test('a socket that does not answer is an error without status', async () => {
    const client = new FirecrackerApiClient(join(dir, 'missing.sock'));
    await assert.rejects(client.createSyncAction({ action_type: 'SendCtrlAltDel' }), (e: unknown) => {
      assert.ok(e instanceof FirecrackerApiError);
      assert.equal(e.statusCode, undefined);
      assert.match(e.message, /ENOENT/);
      return true;
    });
    assert.equal(await socketAnswers(join(dir, 'missing.sock')), false);
    assert.equal(await socketAnswers(socketPath), true);
  });

  test('gives up after the timeout', async () => {
    const client = new FirecrackerApiClient(socketPath);
    await assert.rejects(client.send('GET', '/slow', undefined, { timeoutMs: 100 }), /no answer within 100 ms/);
  });
});
