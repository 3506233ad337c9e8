// The learner's page in a real browser (Debian's chromium, headless, driven by playwright-core)
// against a real agent and QEMU guest in this test's network namespace: terminal tabs, the
// editor and its conflict check, reload and a dropped connection. Screenshots are kept in
// test-results/learner-page/.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { connect } from 'node:net';
import { join } from 'node:path';
import { type Browser, type Locator, type Page } from 'playwright-core';
import { launchChromium } from '../support/chromium.ts';
import { json, requireTestNetns, startAgent, type AgentProcess } from '../support/agent-process.ts';

requireTestNetns();
const WS = 'pagelab';
const SEAT = 1;
const PORT = 19097;
const TOKEN = 'page-test-agent-token';
const ENV = { WORKSPACE_TOKEN_SECRET: 'page-test-secret-that-is-long-enough-0123456789' };
const ARTIFACTS = join(import.meta.dirname, '../../test-results/learner-page');

const activeRows = (page: Page): Locator => page.locator('.terminal-pane.active .xterm-rows');

/** Types a command into the active terminal and waits until `expected` shows on its screen. */
async function run(page: Page, command: string, expected: string | RegExp): Promise<string> {
  await page.locator('.terminal-pane.active').click();
  await page.keyboard.type(`${command}\n`);
  await page.waitForFunction(
    ([pattern, flags]) =>
      new RegExp(pattern ?? '', flags).test(document.querySelector('.terminal-pane.active .xterm-rows')?.textContent ?? ''),
    typeof expected === 'string' ? [expected.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'), ''] : [expected.source, expected.flags],
    { timeout: 30_000 },
  );
  return (await activeRows(page).textContent()) ?? '';
}

async function connected(page: Page): Promise<void> {
  await page.waitForSelector('#conn-state[data-state="connected"]', { timeout: 60_000 });
}

describe('learner page in a browser', { timeout: 15 * 60_000 }, () => {
  let agent: AgentProcess;
  let browser: Browser;
  let page: Page;
  let workspaceUrl: string;
  const shot = (name: string): Promise<Buffer> => page.screenshot({ path: join(ARTIFACTS, `${name}.png`) });

  before(async () => {
    rmSync(ARTIFACTS, { recursive: true, force: true });
    mkdirSync(ARTIFACTS, { recursive: true });
    agent = await startAgent({ port: PORT, token: TOKEN, env: ENV });
    const created = await agent.api('/vms', json({ workshop_id: WS, seat_id: SEAT, wait: 'ready', wait_timeout_s: 180 }));
    assert.equal(created.status, 201, await created.text());
    const issued = (await (await agent.api(`/vms/${WS}/${SEAT}/token`, json({}))).json()) as { token: string; workspace_url: string };
    workspaceUrl = issued.workspace_url;
    browser = await launchChromium();
    page = await (await browser.newContext({ viewport: { width: 1400, height: 900 } })).newPage();
  });
  after(async () => {
    await browser?.close();
    await agent.api(`/vms/${WS}/${SEAT}`, { method: 'DELETE' });
    await agent.kill('SIGTERM');
  });

  test('the token response carries the page URL for that token', () => {
    assert.match(workspaceUrl, new RegExp(`^http://127\\.0\\.0\\.1:${PORT}/workspace/${WS}/${SEAT}/\\?token=[\\w.-]+$`));
  });

  test('a command typed in the terminal shows its output', async () => {
    await page.goto(workspaceUrl);
    await connected(page);
    await run(page, 'echo first-tab-$((6*7)) pid-$$', 'first-tab-42');
    await shot('terminal');
  });

  test('a file made and saved in the editor is what the terminal reads', async () => {
    await page.click('#new-file');
    await page.fill('#dialog-input', 'notes.py');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#editor-path:text("/notes.py")');
    await page.locator('.cm-content').click();
    await page.keyboard.type('print("saved from the editor")');
    await page.keyboard.press('Control+s');
    await page.waitForSelector('#editor-status:text("saved")');
    await run(page, 'cat notes.py', 'print("saved from the editor")');
    await shot('editor-saved');
  });

  test('a file changed in the terminal is not overwritten silently by the editor', async () => {
    await run(page, 'echo changed-in-terminal > notes.py; echo done-$((1+1))', 'done-2');
    await page.locator('.cm-content').click();
    await page.keyboard.press('End');
    await page.keyboard.type(' # my edit');
    await page.keyboard.press('Control+s');
    const dialog = page.locator('dialog[open]');
    await dialog.waitFor({ timeout: 10_000 });
    assert.match((await dialog.textContent()) ?? '', /changed on disk/);
    await shot('conflict');
    await dialog.locator('button', { hasText: 'Cancel' }).click();
    const onDisk = await agent.api(`/proxy/${WS}/${SEAT}/files/notes.py`);
    assert.equal(await onDisk.text(), 'changed-in-terminal\n');
    // Taking the disk's version puts it in the editor.
    await page.keyboard.press('Control+s');
    await dialog.waitFor();
    await dialog.locator('button', { hasText: 'Load the version on disk' }).click();
    await page.waitForFunction(() => document.querySelector('.cm-content')?.textContent === 'changed-in-terminal');
  });

  test('two tabs are two shells', async () => {
    const first = /pid-(\d+)/.exec(await run(page, 'echo pid-$$', /pid-\d+/))?.[1];
    await page.click('#new-terminal');
    await connected(page);
    const second = /pid-(\d+)/.exec(await run(page, 'echo pid-$$', /pid-\d+/))?.[1];
    assert.ok(first && second);
    assert.notEqual(first, second);
    assert.equal(await page.locator('#terminal-tabs .tab').count(), 2);
    await shot('two-tabs');
  });

  test('after a reload both tabs return to their shells with their history', async () => {
    await page.reload();
    await connected(page);
    assert.equal(await page.locator('#terminal-tabs .tab').count(), 2);
    await page.locator('#terminal-tabs .tab').first().click();
    await page.waitForFunction(() => /first-tab-42/.test(document.querySelector('.terminal-pane.active .xterm-rows')?.textContent ?? ''));
  });

  test('a dropped connection shows "reconnecting" and comes back to the same shell and history', async () => {
    const before = /pid-(\d+)/.exec(await run(page, 'echo again-pid-$$', /again-pid-\d+/))?.[1];
    await agent.kill('SIGKILL'); // the connection drops; the VM keeps running
    await page.waitForSelector('#conn-state[data-state="reconnecting"]', { timeout: 20_000 });
    await shot('reconnecting');
    agent = await startAgent({ port: PORT, token: TOKEN, env: ENV, stateDir: agent.stateDir });
    await connected(page);
    const text = await run(page, 'echo back-pid-$$', /back-pid-\d+/);
    assert.match(text, /first-tab-42/, 'the history is replayed');
    assert.equal(/back-pid-(\d+)/.exec(text)?.[1], before, 'the same shell');
    await shot('reconnected');
  });

  test('the same shells opened in a second tab: the first says so and does not take them back until asked', async () => {
    // A duplicated browser tab carries the page's session storage, and with it the shells' ids.
    const storage = await page.evaluate(() => JSON.stringify(Object.entries(sessionStorage)));
    const twin = await page.context().newPage();
    try {
      await twin.addInitScript((entries: string) => {
        for (const [key, value] of JSON.parse(entries) as [string, string][]) sessionStorage.setItem(key, value);
      }, storage);
      await twin.goto(page.url());
      await connected(twin);
      await page.waitForSelector('#conn-state[data-state="open elsewhere"]', { timeout: 30_000 });
      await run(twin, 'echo twin-$((6*7))', 'twin-42');
      assert.equal(await page.locator('#conn-state').getAttribute('data-state'), 'open elsewhere', 'the first tab left the shell alone');
      await shot('open-elsewhere');
      assert.equal(await twin.locator('#conn-state').getAttribute('data-state'), 'connected');
    } finally {
      await twin.close();
    }
    await page.locator('.terminal-pane.active').click();
    await page.keyboard.press('Enter');
    await connected(page);
    await run(page, 'echo taken-back-$((6*7))', 'taken-back-42');
  });

  test('editor: a file not in UTF-8 is not opened for editing; a renamed folder takes the open file along; unsaved edits hold the tab', async () => {
    await run(page, "mkdir -p box && printf 'caf\\351\\n' > latin1.txt && echo 'first' > box/inner.txt && echo made-$((6*7))", 'made-42');
    await page.click('#refresh');
    await page.locator('#tree .entry', { hasText: 'latin1.txt' }).click();
    await page.waitForSelector('#editor-path:text("/latin1.txt")');
    assert.match(
      (await page.locator('.cm-content').textContent()) ?? '',
      /not text the editor opens/,
      'not decoded with its bytes replaced',
    );
    await shot('not-utf8');

    await page.locator('#tree .entry', { hasText: 'box' }).click();
    await page.locator('#tree .entry', { hasText: 'inner.txt' }).click();
    await page.waitForSelector('#editor-path:text("/box/inner.txt")');
    await page.locator('#tree .entry[data-path="/box"]').click();
    await page.click('#rename');
    await page.fill('#dialog-input', 'crate');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#editor-path:text("/crate/inner.txt")');
    await page.locator('.cm-content').click();
    await page.keyboard.press('End');
    await page.keyboard.type(' and second');
    await page.keyboard.press('Control+s');
    await page.waitForSelector('#editor-status:text("saved")');
    await run(page, 'cat crate/inner.txt; test -e box || echo no-box-$((6*7))', 'no-box-42');
    assert.match((await activeRows(page).textContent()) ?? '', /and second/, 'the edit is in the renamed folder');

    await page.locator('.cm-content').click();
    await page.keyboard.type(' unsaved');
    const asked = page.waitForEvent('dialog');
    await page.close({ runBeforeUnload: true });
    const dialog = await asked;
    assert.equal(dialog.type(), 'beforeunload');
    await dialog.dismiss();
    assert.equal(page.isClosed(), false, 'the tab stays, with the edit');
    await page.locator('.cm-content').click();
    await page.keyboard.press('Control+s');
    await page.waitForSelector('#editor-status:text("saved")');
  });

  test('files: upload with progress, download, new folder, rename, delete', async () => {
    await page.locator('#tree .entry', { hasText: 'notes.py' }).click();
    await page.setInputFiles('#upload-input', { name: 'data.csv', mimeType: 'text/csv', buffer: Buffer.from('a,b\n1,2\n') });
    await page.waitForSelector('#tree .entry[data-path="/data.csv"]');
    assert.equal(await (await agent.api(`/proxy/${WS}/${SEAT}/files/data.csv`)).text(), 'a,b\n1,2\n');

    await page.click('#new-folder');
    await page.fill('#dialog-input', 'lesson1');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#tree .entry.selected[data-path="/lesson1"]');
    await page.click('#rename');
    await page.fill('#dialog-input', 'lesson-one');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#tree .entry[data-path="/lesson-one"]');
    await run(page, 'test -d lesson-one && echo renamed-ok', 'renamed-ok');

    await page.locator('#tree .entry', { hasText: 'data.csv' }).click();
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
    assert.equal(download.suggestedFilename(), 'data.csv');
    assert.equal(readFileSync(await download.path(), 'utf8'), 'a,b\n1,2\n');
    await page.click('#delete');
    await page.locator('dialog[open] button', { hasText: 'Delete' }).click();
    await page.waitForSelector('#tree .entry[data-path="/data.csv"]', { state: 'detached' });
    assert.equal((await agent.api(`/proxy/${WS}/${SEAT}/files/data.csv`)).status, 404);
    await shot('files');
  });

  test("a listing from a replaced file server cannot send the page's requests to another seat", async () => {
    // A learner can replace the guest's file server; an instructor opening this seat's page must
    // still only ever call this seat, whatever paths and names the listing holds.
    const other = await page.context().newPage();
    const requested: string[] = [];
    other.on('request', (request) => requested.push(new URL(request.url()).pathname));
    const modifiedAt = new Date().toISOString();
    await other.route(
      (url) => url.pathname === `/proxy/${WS}/${SEAT}/files`,
      (route) =>
        route.fulfill({
          contentType: 'application/json',
          body: JSON.stringify({
            entries: [
              { name: 'main.py', path: `/../../${SEAT + 1}/files/main.py`, type: 'file', size: 6, modified_at: modifiedAt },
              { name: '..', path: '/..', type: 'directory', size: 0, modified_at: modifiedAt },
              { name: 'a/b', path: '/a/b', type: 'file', size: 0, modified_at: modifiedAt },
            ],
          }),
        }),
    );
    try {
      await other.goto(workspaceUrl);
      await other.waitForSelector('#tree .entry[data-path="/main.py"]');
      assert.equal(await other.locator('#tree .entry').count(), 1, 'no entry named ".." or with a slash');
      await Promise.all([
        other.waitForRequest((request) => new URL(request.url()).pathname === `/proxy/${WS}/${SEAT}/files/main.py`),
        other.locator('#tree .entry', { hasText: 'main.py' }).click(),
      ]);
      const calls = requested.filter((path) => path.startsWith('/proxy/'));
      assert.ok(calls.includes(`/proxy/${WS}/${SEAT}/files/main.py`), calls.join(' '));
      assert.deepEqual(
        calls.filter((path) => !path.startsWith(`/proxy/${WS}/${SEAT}/`)),
        [],
        'every call stays on this seat',
      );
    } finally {
      await other.close();
    }
  });

  test('served under another path prefix (as a proxy in front would), the page works the same', async () => {
    const prefix = '/course/abc';
    const target = new URL(agent.url);
    const strip = (path: string | undefined): string => (path ?? '/').slice(prefix.length) || '/';
    // A minimal reverse proxy: requests and WebSocket upgrades under /course/abc/ go to the agent.
    const front = http.createServer((req, res) => {
      const upstream = http.request(
        { host: target.hostname, port: target.port, method: req.method, path: strip(req.url), headers: req.headers },
        (answer) => {
          res.writeHead(answer.statusCode ?? 502, answer.headers);
          answer.pipe(res);
        },
      );
      req.pipe(upstream);
    });
    front.on('upgrade', (req, socket, head) => {
      const upstream = connect(Number(target.port), target.hostname, () => {
        const headers = Object.entries(req.headers).map(([k, v]) => `${k}: ${String(v)}`);
        upstream.write(`GET ${strip(req.url)} HTTP/1.1\r\n${headers.join('\r\n')}\r\n\r\n`);
        upstream.write(head);
        upstream.pipe(socket).pipe(upstream);
      });
      upstream.on('error', () => socket.destroy());
      socket.on('error', () => upstream.destroy());
    });
    await new Promise<void>((resolve) => front.listen(19099, '127.0.0.1', resolve));
    try {
      const url = new URL(workspaceUrl);
      const other = await page.context().newPage();
      await other.goto(`http://127.0.0.1:19099${prefix}${url.pathname}${url.search}`);
      await other.waitForSelector('#conn-state[data-state="connected"]', { timeout: 60_000 });
      await other.waitForSelector('#tree .entry[data-path="/notes.py"]');
      await other.locator('.terminal-pane.active').click();
      await other.keyboard.type('echo via-prefix-$((2*21))\n');
      await other.waitForFunction(() =>
        /via-prefix-42/.test(document.querySelector('.terminal-pane.active .xterm-rows')?.textContent ?? ''),
      );
      await other.screenshot({ path: join(ARTIFACTS, 'under-prefix.png') });
      await other.close();
    } finally {
      front.closeAllConnections();
      await new Promise<void>((resolve) => front.close(() => resolve()));
    }
  });

  test('on a narrow screen the panels stack', async () => {
    await page.setViewportSize({ width: 480, height: 1000 });
    const files = await page.locator('aside.files').boundingBox();
    const terminals = await page.locator('section.terminals').boundingBox();
    assert.ok(files && terminals);
    assert.ok(terminals.y >= files.y + files.height - 1, 'the terminal is below the files, not beside them');
    assert.ok(files.width > 400);
    await shot('narrow');
  });
});
