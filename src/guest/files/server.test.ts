// The file service over real HTTP on a temp workspace: list, download, upload, move, delete, escapes.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import type { IncomingHttpHeaders } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { HELD_HEADER, HOLD_ABOVE_HEADER } from '../contract.ts';
import type { FilesConfig } from '../shared/config.ts';
import { silentLogger } from '../shared/log.ts';
import { startFilesServer } from './server.ts';
import type { Entry, RunningServer } from './server.ts';
import { TEMP_PREFIX } from './upload.ts';

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
  json<T = Record<string, unknown>>(): T;
}

/** Raw HTTP request: the path is sent exactly as given (no URL normalisation, unlike fetch). */
function request(
  port: number,
  method: string,
  rawPath: string,
  opts: { body?: Buffer | string; headers?: Record<string, string> } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path: rawPath, headers: opts.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: <T>() => JSON.parse(body.toString('utf8')) as T });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(opts.body);
  });
}

const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

async function tempFilesIn(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n.startsWith(TEMP_PREFIX));
}

describe('files server', () => {
  let root: string;
  let workspace: string;
  let outside: string;
  let server: RunningServer;
  const call = (method: string, rawPath: string, opts?: { body?: Buffer | string; headers?: Record<string, string> }): Promise<Reply> =>
    request(server.port, method, rawPath, opts);

  function config(overrides: Partial<FilesConfig> = {}): FilesConfig {
    return { host: '127.0.0.1', port: 0, workspaceDir: workspace, maxUploadBytes: 64 * 1024 * 1024, ...overrides };
  }

  before(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'ct-files-'));
    workspace = path.join(root, 'workspace');
    outside = path.join(root, 'outside');
    await mkdir(path.join(workspace, 'sub', 'deeper'), { recursive: true });
    await mkdir(path.join(workspace, 'Alpha'));
    await mkdir(outside);
    await writeFile(path.join(workspace, 'hello.txt'), 'hello world\n');
    await writeFile(path.join(workspace, 'sub', 'inner.txt'), 'inner\n');
    await writeFile(path.join(workspace, 'sub', 'deeper', 'x.bin'), randomBytes(100));
    await writeFile(path.join(outside, 'secret.txt'), 'top secret\n');
    await symlink('/etc', path.join(workspace, 'etc-link'));
    await symlink(outside, path.join(workspace, 'out-link'));
    await symlink(path.join(outside, 'secret.txt'), path.join(workspace, 'secret-link'));
    await symlink(path.join(outside, 'not-yet'), path.join(workspace, 'dangling-out'));
    await symlink('sub/inner.txt', path.join(workspace, 'inner-link'));
    // Left by a files service that died mid-upload; the next start removes them.
    await writeFile(path.join(workspace, 'sub', '.ct-upload-0123456789abcdef.tmp'), 'half an upload');
    await writeFile(path.join(outside, '.ct-upload-0123456789abcdef.tmp'), 'not ours: outside the workspace');
    server = await startFilesServer({ config: config(), logger: silentLogger });
  });

  after(async () => {
    await server.close();
    await rm(root, { recursive: true, force: true });
  });

  it('removes upload temp files a crashed predecessor left, and only those', async () => {
    assert.deepEqual((await readdir(path.join(workspace, 'sub'))).sort(), ['deeper', 'inner.txt']);
    assert.ok((await readdir(outside)).includes('.ct-upload-0123456789abcdef.tmp'), 'symlinked dirs outside are not walked');
    await rm(path.join(outside, '.ct-upload-0123456789abcdef.tmp'));
  });

  it('answers /health and unknown routes', async () => {
    const health = await call('GET', '/health');
    assert.equal(health.status, 200);
    assert.deepEqual(health.json(), { status: 'ok', service: 'files' });
    const missing = await call('GET', '/nope');
    assert.equal(missing.status, 404);
    assert.equal(missing.json().code, 'not_found');
  });

  it('lists a directory: directories first, symlinks not followed', async () => {
    for (const p of ['/files/', '/files']) {
      const res = await call('GET', p);
      assert.equal(res.status, 200);
      const body = res.json<{ path: string; entries: Entry[] }>();
      assert.equal(body.path, '/');
      const names = body.entries.map((e) => `${e.type}:${e.name}`);
      assert.deepEqual(names, [
        'directory:Alpha',
        'directory:sub',
        'symlink:dangling-out',
        'symlink:etc-link',
        'file:hello.txt',
        'symlink:inner-link',
        'symlink:out-link',
        'symlink:secret-link',
      ]);
      const hello = body.entries.find((e) => e.name === 'hello.txt');
      assert.ok(hello);
      assert.deepEqual(
        { ...hello, modified_at: undefined },
        { name: 'hello.txt', path: '/hello.txt', type: 'file', size: 12, modified_at: undefined },
      );
      assert.ok(!Number.isNaN(Date.parse(hello.modified_at)));
    }
    const sub = (await call('GET', '/files/sub')).json<{ path: string; entries: Entry[] }>();
    assert.equal(sub.path, '/sub');
    assert.deepEqual(
      sub.entries.map((e) => e.path),
      ['/sub/deeper', '/sub/inner.txt'],
    );
  });

  it('round-trips a multi-MB upload byte for byte', async () => {
    const data = randomBytes(6 * 1024 * 1024 + 123);
    const created = await call('PUT', '/files/up/load/data.bin', { body: data });
    assert.equal(created.status, 201);
    assert.deepEqual(
      { ...created.json<Entry>(), modified_at: undefined },
      { name: 'data.bin', path: '/up/load/data.bin', type: 'file', size: data.length, modified_at: undefined },
    );
    const got = await call('GET', '/files/up/load/data.bin');
    assert.equal(got.status, 200);
    assert.equal(got.headers['content-length'], String(data.length));
    assert.equal(got.headers['content-type'], 'application/octet-stream');
    assert.equal(got.headers['accept-ranges'], 'bytes');
    assert.ok(got.headers.etag && got.headers['last-modified']);
    assert.equal(sha256(got.body), sha256(data));

    const replaced = await call('PUT', '/files/up/load/data.bin', { body: 'small' });
    assert.equal(replaced.status, 200);
    assert.equal((await call('GET', '/files/up/load/data.bin')).body.toString(), 'small');
    assert.deepEqual(await tempFilesIn(path.join(workspace, 'up', 'load')), []);
  });

  it('serves ranges, HEAD, text types and conditional requests', async () => {
    const body = Buffer.from('0123456789abcdefghij');
    await call('PUT', '/files/range.txt', { body });
    const part = await call('GET', '/files/range.txt', { headers: { Range: 'bytes=5-9' } });
    assert.equal(part.status, 206);
    assert.equal(part.headers['content-range'], 'bytes 5-9/20');
    assert.equal(part.headers['content-length'], '5');
    assert.equal(part.body.toString(), '56789');
    assert.equal(part.headers['content-type'], 'text/plain; charset=utf-8');
    const suffix = await call('GET', '/files/range.txt', { headers: { Range: 'bytes=-3' } });
    assert.equal(suffix.status, 206);
    assert.equal(suffix.body.toString(), 'hij');
    const open = await call('GET', '/files/range.txt', { headers: { Range: 'bytes=15-' } });
    assert.equal(open.body.toString(), 'fghij');
    const unsatisfiable = await call('GET', '/files/range.txt', { headers: { Range: 'bytes=20-30' } });
    assert.equal(unsatisfiable.status, 416);
    assert.equal(unsatisfiable.headers['content-range'], 'bytes */20');
    const multi = await call('GET', '/files/range.txt', { headers: { Range: 'bytes=0-1,3-4' } });
    assert.equal(multi.status, 200);

    const head = await call('HEAD', '/files/range.txt');
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], '20');
    assert.equal(head.body.length, 0);
    const etag = head.headers.etag ?? '';
    assert.equal((await call('GET', '/files/range.txt', { headers: { 'If-None-Match': etag } })).status, 304);
    const stale = await call('GET', '/files/range.txt', { headers: { Range: 'bytes=0-0', 'If-Range': '"other"' } });
    assert.equal(stale.status, 200);

    const viaLink = await call('GET', '/files/inner-link');
    assert.equal(viaLink.status, 200);
    assert.equal(viaLink.body.toString(), 'inner\n');
    const missing = await call('GET', '/files/nope.txt');
    assert.equal(missing.status, 404);
    assert.deepEqual(missing.json(), { error: '/nope.txt does not exist', code: 'not_found' });
    assert.equal((await call('GET', '/files/hello.txt/below')).status, 404);
  });

  it('holds a body of the asked size, sends it after its head as the agent gives credit, then serves the next request (the kernel relay handshake)', async () => {
    const bytes = randomBytes(300 * 1024);
    await writeFile(path.join(workspace, 'held.bin'), bytes);
    // A raw connection, as the agent's sockmap sees it: the held body is outside HTTP's framing.
    const socket = net.connect(server.port, '127.0.0.1');
    let received = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => (received = Buffer.concat([received, chunk])));
    const chunk = (text: string): string => `${Buffer.byteLength(text).toString(16)}\r\n${text}\r\n`;
    socket.write(
      `GET /files/held.bin HTTP/1.1\r\nHost: guest\r\n${HOLD_ABOVE_HEADER}: ${bytes.length}\r\nTransfer-Encoding: chunked\r\n\r\n`,
    );
    const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 300));
    await settle();
    const headEnd = received.indexOf('\r\n\r\n');
    assert.ok(headEnd > 0, 'the head comes at once');
    const head = received.subarray(0, headEnd).toString('latin1');
    assert.match(head, /^HTTP\/1\.1 200 /);
    assert.match(head, new RegExp(`\r\n${HELD_HEADER}: ${bytes.length}\r\n`, 'i'));
    assert.match(head, /\r\ncontent-length: 0\r\n/i);
    assert.doesNotMatch(head, /connection: close/i);
    const body = (): Buffer => received.subarray(headEnd + 4);
    assert.equal(body().length, 0, 'nothing of the body before the release');
    socket.write(chunk('100000\n'));
    await settle();
    assert.equal(body().length, 100_000, 'exactly the credit');
    socket.write(chunk('150000\n1')); // a line split across writes
    socket.write(chunk('70000\n'));
    await settle();
    assert.equal(body().length, 170_000);
    socket.write(chunk(`${bytes.length}\n`));
    await settle();
    assert.equal(sha256(body()), sha256(bytes));
    // The agent ends its request: the connection carries the next one.
    socket.write('0\r\n\r\nGET /files/held.bin HTTP/1.1\r\nHost: guest\r\n\r\n');
    const before = headEnd + 4 + bytes.length;
    await settle();
    const next = received.subarray(before);
    const nextHeadEnd = next.indexOf('\r\n\r\n');
    assert.match(next.subarray(0, nextHeadEnd).toString('latin1'), /^HTTP\/1\.1 200 /);
    assert.equal(sha256(next.subarray(nextHeadEnd + 4)), sha256(bytes));
    socket.destroy();

    // Under the size, or not asked: answered at once, unmarked.
    const small = await call('GET', '/files/held.bin', { headers: { [HOLD_ABOVE_HEADER]: String(bytes.length + 1) } });
    assert.equal(small.headers[HELD_HEADER], undefined);
    assert.equal(sha256(small.body), sha256(bytes));
    const plain = await call('GET', '/files/held.bin');
    assert.equal(plain.headers[HELD_HEADER], undefined);
    const headOnly = await call('HEAD', '/files/held.bin', { headers: { [HOLD_ABOVE_HEADER]: '1' } });
    assert.equal(headOnly.headers[HELD_HEADER], undefined);
    await rm(path.join(workspace, 'held.bin'));
  });

  it('saves only over the version the editor read (If-Match), creates only when asked (If-None-Match: *)', async () => {
    const first = await call('PUT', '/files/edit/notes.txt', { body: 'v1' });
    assert.equal(first.status, 201);
    const v1 = first.headers.etag;
    assert.ok(typeof v1 === 'string' && v1.startsWith('"'));
    assert.equal((await call('GET', '/files/edit/notes.txt')).headers.etag, v1);

    const saved = await call('PUT', '/files/edit/notes.txt', { body: 'v2 from the editor', headers: { 'If-Match': v1 } });
    assert.equal(saved.status, 200);
    const v2 = saved.headers.etag;
    assert.notEqual(v2, v1);

    // Someone changed it meanwhile (the terminal): the stale save is refused and the file kept.
    const stale = await call('PUT', '/files/edit/notes.txt', { body: 'lost edit', headers: { 'If-Match': v1 } });
    assert.equal(stale.status, 412);
    assert.equal(stale.json().code, 'precondition_failed');
    assert.equal(stale.headers.etag, v2);
    assert.equal(await readFile(path.join(workspace, 'edit', 'notes.txt'), 'utf8'), 'v2 from the editor');

    const createOnly = await call('PUT', '/files/edit/notes.txt', { body: 'x', headers: { 'If-None-Match': '*' } });
    assert.equal(createOnly.status, 412);
    assert.equal((await call('PUT', '/files/edit/new.txt', { body: 'x', headers: { 'If-None-Match': '*' } })).status, 201);
    const gone = await call('PUT', '/files/edit/missing.txt', { body: 'x', headers: { 'If-Match': '*' } });
    assert.equal(gone.status, 412);
    assert.equal(existsSync(path.join(workspace, 'edit', 'missing.txt')), false);

    // Two saves over the same version at once: one wins, the other is told, never both.
    const base = (await call('PUT', '/files/edit/race.txt', { body: 'base' })).headers.etag ?? '';
    const racing = await Promise.all(
      ['tab one', 'tab two'].map((body) =>
        call('PUT', '/files/edit/race.txt', { body: body.repeat(50_000), headers: { 'If-Match': base } }),
      ),
    );
    assert.deepEqual(racing.map((r) => r.status).sort(), [200, 412]);
    const winner = racing.findIndex((r) => r.status === 200);
    assert.equal(await readFile(path.join(workspace, 'edit', 'race.txt'), 'utf8'), ['tab one', 'tab two'][winner]?.repeat(50_000));

    assert.equal((await call('DELETE', '/files/edit/notes.txt', { headers: { 'If-Match': v1 } })).status, 412);
    assert.equal((await call('DELETE', '/files/edit/notes.txt', { headers: { 'If-Match': String(v2) } })).status, 204);
  });

  it('creates directories with mkdir', async () => {
    const made = await call('POST', '/files/made/a/b', { body: JSON.stringify({ action: 'mkdir' }) });
    assert.equal(made.status, 201);
    assert.equal(made.json().type, 'directory');
    assert.equal((await call('POST', '/files/made/a/b', { body: '{"action":"mkdir"}' })).status, 200);
    const onFile = await call('POST', '/files/hello.txt', { body: '{"action":"mkdir"}' });
    assert.equal(onFile.status, 409);
    const under = await call('POST', '/files/hello.txt/x', { body: '{"action":"mkdir"}' });
    assert.equal(under.status, 409);
    assert.equal(under.json().code, 'not_a_directory');
    const unknown = await call('POST', '/files/made', { body: '{"action":"chmod"}' });
    assert.equal(unknown.status, 400);
    assert.equal(unknown.json().code, 'invalid_request');
    assert.equal((await call('POST', '/files/made', { body: 'not json' })).json().code, 'invalid_request');
  });

  it('moves entries, refusing to clobber unless overwrite is set', async () => {
    await call('PUT', '/files/mv/one.txt', { body: 'one' });
    await call('PUT', '/files/mv/two.txt', { body: 'two' });
    const moved = await call('POST', '/files/mv/one.txt', { body: JSON.stringify({ action: 'move', to: '/mv/new/uno.txt' }) });
    assert.equal(moved.status, 200);
    assert.equal(moved.json().path, '/mv/new/uno.txt');
    assert.equal((await call('GET', '/files/mv/one.txt')).status, 404);
    assert.equal((await call('GET', '/files/mv/new/uno.txt')).body.toString(), 'one');
    const clash = await call('POST', '/files/mv/new/uno.txt', { body: JSON.stringify({ action: 'move', to: '/mv/two.txt' }) });
    assert.equal(clash.status, 409);
    assert.equal(clash.json().code, 'exists');
    const forced = await call('POST', '/files/mv/new/uno.txt', {
      body: JSON.stringify({ action: 'move', to: '/mv/two.txt', overwrite: true }),
    });
    assert.equal(forced.status, 200);
    assert.equal((await call('GET', '/files/mv/two.txt')).body.toString(), 'one');
    const dir = await call('POST', '/files/mv/new', { body: JSON.stringify({ action: 'move', to: 'mv/renamed' }) });
    assert.equal(dir.status, 200);
    assert.equal(dir.json().type, 'directory');
    const intoItself = await call('POST', '/files/mv', { body: JSON.stringify({ action: 'move', to: '/mv/renamed/inside' }) });
    assert.equal(intoItself.status, 400);
    assert.equal((await call('POST', '/files/nothing-here', { body: JSON.stringify({ action: 'move', to: '/x' }) })).status, 404);
  });

  it('deletes files and directories, never the root', async () => {
    await call('PUT', '/files/del/a/file.txt', { body: 'x' });
    await call('POST', '/files/del/empty', { body: '{"action":"mkdir"}' });
    assert.equal((await call('DELETE', '/files/del/a/file.txt')).status, 204);
    assert.equal((await call('DELETE', '/files/del/a/file.txt')).status, 404);
    assert.equal((await call('DELETE', '/files/del/empty')).status, 204);
    await call('PUT', '/files/del/a/again.txt', { body: 'x' });
    const notEmpty = await call('DELETE', '/files/del');
    assert.equal(notEmpty.status, 409);
    assert.equal(notEmpty.json().code, 'directory_not_empty');
    assert.equal((await call('DELETE', '/files/del?recursive=true')).status, 204);
    assert.equal(existsSync(path.join(workspace, 'del')), false);
    for (const p of ['/files/', '/files', '/files/.', '/files/?recursive=true']) {
      const res = await call('DELETE', p);
      assert.equal(res.status, 403, p);
      assert.equal(res.json().code, 'forbidden_path');
    }
    assert.ok(existsSync(workspace));
  });

  it('refuses every escape attempt with 403 forbidden_path', async () => {
    const attempts = [
      '/files/../etc/passwd',
      '/files/sub/../../etc/passwd',
      '/files/%2e%2e/etc/passwd',
      '/files/%2E%2E/%2E%2E/etc/passwd',
      '/files/..%2fetc%2fpasswd',
      '/files/sub%2F..%2F..%2Fetc%2Fpasswd',
      '/files/%252e%252e/etc/passwd',
      '/files/%25252e%25252e/etc/passwd',
      '/files//etc/passwd',
      '/files/%2Fetc%2Fpasswd',
      '/files/hello.txt%00.png',
      '/files/etc-link/passwd',
      '/files/etc-link',
      '/files/secret-link',
      '/files/out-link/secret.txt',
      '/files/out-link',
    ];
    for (const p of attempts) {
      for (const method of ['GET', 'HEAD', 'PUT', 'DELETE', 'POST']) {
        const body = method === 'PUT' ? 'pwned' : method === 'POST' ? '{"action":"mkdir"}' : undefined;
        if (method === 'DELETE' && /-link$/.test(p)) continue; // deleting the link itself is allowed (below)
        if (method === 'POST' && /-link$/.test(p)) continue; // mkdir through a link to an existing outside dir: checked below
        const res = await call(method, p, { body });
        assert.equal(res.status, 403, `${method} ${p} -> ${res.status} ${res.body.toString()}`);
        if (method !== 'HEAD') assert.equal(res.json().code, 'forbidden_path', `${method} ${p}`);
      }
    }
    // writes through links that leave the workspace
    for (const p of [
      '/files/etc-link/ct-should-not-exist',
      '/files/out-link/new.txt',
      '/files/out-link/nested/new.txt',
      '/files/dangling-out',
      '/files/secret-link',
    ]) {
      const res = await call('PUT', p, { body: 'pwned' });
      assert.equal(res.status, 403, `PUT ${p}`);
    }
    for (const p of ['/files/out-link/newdir', '/files/etc-link/newdir', '/files/dangling-out']) {
      assert.equal((await call('POST', p, { body: '{"action":"mkdir"}' })).status, 403, `mkdir ${p}`);
    }
    for (const to of ['../escaped.txt', '/out-link/moved.txt', '/etc-link/moved.txt', 'sub/../../x']) {
      const res = await call('POST', '/files/hello.txt', { body: JSON.stringify({ action: 'move', to }) });
      assert.equal(res.status, 403, `move to ${to}`);
    }
    assert.equal(existsSync('/etc/ct-should-not-exist'), false);
    assert.equal(existsSync(path.join(outside, 'not-yet')), false);
    assert.deepEqual((await readdir(outside)).sort(), ['secret.txt']);
    assert.equal(await readFile(path.join(outside, 'secret.txt'), 'utf8'), 'top secret\n');
    assert.equal(await readFile(path.join(workspace, 'hello.txt'), 'utf8'), 'hello world\n');

    // Deleting an escaping symlink removes only the link.
    assert.equal((await call('DELETE', '/files/secret-link?recursive=true')).status, 204);
    assert.equal(existsSync(path.join(workspace, 'secret-link')), false);
    assert.equal(await readFile(path.join(outside, 'secret.txt'), 'utf8'), 'top secret\n');
    await symlink(path.join(outside, 'secret.txt'), path.join(workspace, 'secret-link'));
  });

  it('keeps the old content and no temp file when an upload is cut off', async () => {
    const original = Buffer.from('original content');
    await call('PUT', '/files/cut/target.bin', { body: original });
    const dir = path.join(workspace, 'cut');
    const req = http.request({
      host: '127.0.0.1',
      port: server.port,
      method: 'PUT',
      path: '/files/cut/target.bin',
      headers: { 'Content-Length': String(32 * 1024 * 1024) },
      agent: false,
    });
    req.on('error', () => {});
    req.on('response', () => assert.fail('no response expected for a cut-off upload'));
    const chunk = randomBytes(256 * 1024);
    const deadline = Date.now() + 5000;
    while ((await tempFilesIn(dir)).length === 0) {
      assert.ok(Date.now() < deadline, 'temp file never appeared');
      req.write(chunk);
      await new Promise((r) => setTimeout(r, 10));
    }
    req.destroy();
    while ((await tempFilesIn(dir)).length > 0) {
      assert.ok(Date.now() < deadline + 5000, 'temp file left behind');
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.deepEqual(await readFile(path.join(dir, 'target.bin')), original);
    assert.deepEqual(await readdir(dir), ['target.bin']);
  });

  it('rejects uploads over FILES_MAX_UPLOAD_BYTES with 413, writing nothing', async () => {
    const small = await startFilesServer({ config: config({ maxUploadBytes: 1024 * 1024 }), logger: silentLogger });
    try {
      const big = randomBytes(2 * 1024 * 1024);
      const declared = await request(small.port, 'PUT', '/files/big/declared.bin', { body: big });
      assert.equal(declared.status, 413);
      assert.equal(declared.json().code, 'too_large');

      // chunked: no Content-Length, counted while streaming
      const counted = await new Promise<Reply>((resolve, reject) => {
        const req = http.request(
          { host: '127.0.0.1', port: small.port, method: 'PUT', path: '/files/big/counted.bin', agent: false },
          (res) => {
            const chunks: Buffer[] = [];
            res.on('data', (c: Buffer) => chunks.push(c));
            res.on('end', () => {
              const body = Buffer.concat(chunks);
              resolve({ status: res.statusCode ?? 0, headers: res.headers, body, json: <T>() => JSON.parse(body.toString()) as T });
            });
          },
        );
        req.on('error', reject);
        for (let i = 0; i < 8; i += 1) req.write(big.subarray(i * 256 * 1024, (i + 1) * 256 * 1024));
        req.end();
      });
      assert.equal(counted.status, 413);
      assert.equal(counted.json().code, 'too_large');
      assert.equal(existsSync(path.join(workspace, 'big', 'declared.bin')), false);
      assert.equal(existsSync(path.join(workspace, 'big', 'counted.bin')), false);
      assert.deepEqual(existsSync(path.join(workspace, 'big')) ? await tempFilesIn(path.join(workspace, 'big')) : [], []);
      const fits = await request(small.port, 'PUT', '/files/big/fits.bin', { body: big.subarray(0, 1024 * 1024) });
      assert.equal(fits.status, 201);
    } finally {
      await small.close();
    }
  });
});
