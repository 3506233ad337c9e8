// A whole workshop in a real browser (Debian's chromium, headless, playwright-core): on a fresh
// server the instructor signs up with the URL the server logged (its setup code), logs out and in
// again on the dashboard, and creates a workshop of 3 seats over two real
// agents (QEMU guests; the second agent in a namespace of its own inside this test's, joined by a
// veth pair); two learners join with the code in two browser contexts and each types a command in
// their own terminal; the dashboard shows both, and opens one learner's workspace; a learner
// reloads and is back in the same shell; ending the workshop removes every VM on both agents.
// Screenshots are kept in test-results/server-pages/.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Browser, type BrowserContext, type Page } from 'playwright-core';
import { launchChromium } from '../support/chromium.ts';
import { peerNamespace, requireTestNetns, startAgent, type AgentProcess, type PeerNamespace } from '../support/agent-process.ts';
import { freePort } from '../support/workshop-server.ts';
import { setupLine, startServer, type RunningServer } from '../../src/cli/server.ts';
import { loadServerConfig } from '../../src/server-config/config.ts';
import { createLogger } from '../../src/shared/logger.ts';

requireTestNetns();
const ARTIFACTS = join(import.meta.dirname, '../../test-results/server-pages');
const EMAIL = 'teacher@example.org';
const PASSWORD = 'a-long-enough-password';
const AGENT_TOKEN = 'server-pages-agent-token';
/** Three cold boots at once under TCG on two cores take a while. */
const SEATS_READY_MS = 8 * 60_000;

async function connected(page: Page): Promise<void> {
  await page.waitForSelector('#conn-state[data-state="connected"]', { timeout: 90_000 });
}

/** Types a command into the active terminal and waits until `expected` shows on its screen. */
async function run(page: Page, command: string, expected: string): Promise<void> {
  await page.locator('.terminal-pane.active').click();
  await page.keyboard.type(`${command}\n`);
  await screenShows(page, expected);
}

async function screenShows(page: Page, expected: string): Promise<void> {
  await page.waitForFunction(
    (text) => (document.querySelector('.terminal-pane.active .xterm-rows')?.textContent ?? '').includes(text),
    expected,
    { timeout: 30_000 },
  );
}

interface VmList {
  vms: { workshop_id: string; seat_id: number; pid: number }[];
}

describe('a workshop in the browser, over two agents', { timeout: 20 * 60_000 }, () => {
  let peer: PeerNamespace;
  const agents: AgentProcess[] = [];
  let server: RunningServer;
  let browser: Browser;
  let instructor: Page;
  const learners: { name: string; context: BrowserContext; page: Page }[] = [];
  /** The sign-up URL of the server's log line, as an operator copies it. */
  let setupUrl = '';
  let workshopId = '';
  let joinCode = '';
  const rejoinLinks: string[] = [];
  const shot = (page: Page, name: string): Promise<Buffer> => page.screenshot({ path: join(ARTIFACTS, `${name}.png`) });
  /** The VMM's pid of a seat of this workshop, on whichever agent holds it. */
  const vmPid = async (seat: number): Promise<number | undefined> => {
    for (const agent of agents) {
      const { vms } = (await (await agent.api('/vms')).json()) as VmList;
      const vm = vms.find((v) => v.workshop_id === workshopId && v.seat_id === seat);
      if (vm) return vm.pid;
    }
    return undefined;
  };

  before(async () => {
    rmSync(ARTIFACTS, { recursive: true, force: true });
    mkdirSync(ARTIFACTS, { recursive: true });
    peer = peerNamespace(1);
    // Both agents are up before any VM exists: each sweeps, at its start, the VM cgroups it does not know.
    const env = { VM_MEMORY_MB: '384', CAPACITY: '2' };
    agents.push(await startAgent({ port: await freePort(), token: AGENT_TOKEN, env: { ...env, WORKER_ID: 'agent-a' } }));
    agents.push(
      await startAgent({
        port: 19_311,
        token: AGENT_TOKEN,
        netns: peer.name,
        host: peer.peerIp,
        env: { ...env, WORKER_ID: 'agent-b', BRIDGE_CIDR: '192.168.101.1/24' },
      }),
    );
    const dataDir = mkdtempSync(join(tmpdir(), 'ct-server-pages-'));
    // The server's own JSON log, on stdout as ever, and read here for the line an operator acts on.
    const logged: string[] = [];
    const log = createLogger('warn', 'clarateach-server', {
      write: (line: string) => {
        logged.push(line);
        process.stdout.write(line);
      },
    });
    server = await startServer(
      loadServerConfig({ DATA_DIR: dataDir, PORT: String(await freePort()), HOST: '127.0.0.1', WORKER_POLL_S: '2', LOG_LEVEL: 'warn' }),
      { log },
    );
    const [head = '', tail = ''] = setupLine('\n').split('\n');
    const messages = logged.map((line) => (JSON.parse(line) as { msg?: string }).msg ?? '');
    const line = messages.find((msg) => msg.startsWith(head) && msg.endsWith(tail)) ?? '';
    setupUrl = line.slice(head.length, line.length - tail.length);
    assert.match(setupUrl, /^http:\/\/127\.0\.0\.1:\d+\/\?setup=[\w-]{40,}$/, `the sign-up line in the log:\n${logged.join('')}`);
    browser = await launchChromium();
    instructor = await (await browser.newContext({ viewport: { width: 1300, height: 900 } })).newPage();
  });

  after(async () => {
    await browser?.close();
    await server?.stop();
    for (const agent of agents) {
      // Whatever a failed test left: no VM outlives it.
      const { vms } = (await (await agent.api('/vms')).json().catch(() => ({ vms: [] }))) as VmList;
      for (const vm of vms) await agent.api(`/vms/${vm.workshop_id}/${vm.seat_id}`, { method: 'DELETE' });
      await agent.kill('SIGTERM');
    }
    peer?.remove();
  });

  test('the instructor signs up with the code the server logged, logs in again and creates a workshop of 3 seats; they are made on both workers', async () => {
    await instructor.goto(setupUrl);
    await instructor.waitForSelector('#setup-form:not([hidden])');
    assert.equal(await instructor.isVisible('#login-form'), false, 'no login form before there is an account');
    assert.equal(new URL(instructor.url()).search, '', 'the code is taken out of the address bar');
    assert.equal(await instructor.inputValue('#setup-code'), new URL(setupUrl).searchParams.get('setup'));
    await instructor.fill('#setup-email', EMAIL);
    await instructor.fill('#setup-password', PASSWORD);
    await instructor.fill('#setup-password-again', 'not-the-same-password');
    await instructor.click('#setup');
    await instructor.waitForSelector('#error:text("The two passwords do not match")');
    await instructor.fill('#setup-password-again', PASSWORD);
    await instructor.click('#setup');
    await instructor.waitForSelector('#workshops:not([hidden])');
    assert.equal(await instructor.textContent('#who'), EMAIL);
    assert.equal(await instructor.isVisible('#setup-form'), false);
    await shot(instructor, 'signed-up');

    // The operator registers the workers (the CLI's way: a bearer session of the new account).
    const login = await fetch(`${server.url}/api/login`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: EMAIL, password: PASSWORD, bearer: true }),
    });
    assert.equal(login.status, 200);
    const { session_token } = (await login.json()) as { session_token: string };
    for (const [i, agent] of agents.entries()) {
      const added = await fetch(`${server.url}/api/workers`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${session_token}` },
        body: JSON.stringify({ url: agent.url, token: AGENT_TOKEN, id: `worker-${i === 0 ? 'a' : 'b'}` }),
      });
      assert.equal(added.status, 201, await added.text());
    }

    // With an account made, the same link leads to the login form.
    await instructor.click('#logout');
    await instructor.waitForSelector('#login-form:not([hidden])');
    await instructor.goto(setupUrl);
    await instructor.waitForSelector('#login-form:not([hidden])');
    assert.equal(await instructor.isVisible('#setup-form'), false);
    await instructor.fill('#email', EMAIL);
    await instructor.fill('#password', 'not-the-password');
    await instructor.click('#login');
    await instructor.waitForSelector('#error:text("wrong email or password")');
    await instructor.fill('#password', PASSWORD);
    await instructor.click('#login');
    await instructor.waitForSelector('#workshops:not([hidden])');
    assert.equal(await instructor.isVisible('#login-form'), false, 'the login form is gone once logged in');
    await instructor.fill('#ws-name', 'Shell basics');
    await instructor.fill('#ws-seats', '3');
    await instructor.fill('#ws-memory', '384');
    // 9 minutes: the learners' pages warn of the end from the start.
    await instructor.fill('#ws-hours', '0.15');
    await instructor.click('#create');
    await instructor.waitForSelector('#workshop:not([hidden]) #seat-rows tr:nth-child(3)');
    joinCode = (await instructor.textContent('#ws-code')) ?? '';
    assert.match(joinCode, /^[A-Z0-9]{8}$/);
    // Every seat ready, or one failed (then its reason, from the row's title, is the failure).
    await instructor.waitForFunction(
      () => {
        const states = [...document.querySelectorAll('#seat-rows tr')].map((row) => row.getAttribute('data-state'));
        return states.includes('failed') || states.every((state) => state === 'ready');
      },
      undefined,
      { timeout: SEATS_READY_MS, polling: 1000 },
    );
    const failed = await instructor.$$eval('#seat-rows tr[data-state="failed"] td.state', (cells) =>
      cells.map((c) => c.getAttribute('title')),
    );
    assert.deepEqual(failed, [], 'no seat failed');
    await shot(instructor, 'dashboard-ready');
    const workersShown = await instructor.$$eval('#seat-rows tr td:nth-child(3)', (cells) => cells.map((c) => c.textContent));
    assert.deepEqual([...new Set(workersShown)].sort(), ['worker-a', 'worker-b']);
    const counts = await Promise.all(agents.map(async (a) => ((await (await a.api('/vms')).json()) as VmList).vms.length));
    assert.deepEqual(counts.sort(), [1, 2]);
  });

  test('two learners join with the code, each in their own browser, and each types in their own terminal', async () => {
    for (const name of ['Ada', 'Grace']) {
      const context = await browser.newContext({ viewport: { width: 1300, height: 900 } });
      const page = await context.newPage();
      await page.goto(`${server.url}/join`);
      await page.click('#join');
      await page.waitForSelector('#error:text("Type the workshop code and your name.")');
      await page.fill('#code', 'NOPE-NOPE');
      await page.fill('#name', name);
      await page.click('#join');
      await page.waitForSelector('#error:not([hidden])');
      assert.match((await page.textContent('#error')) ?? '', /code/i);
      await page.fill('#code', joinCode.toLowerCase());
      await page.click('#join');
      await page.waitForSelector('#seat:visible #rejoin-link');
      assert.equal(await page.isVisible('#join-form'), false);
      rejoinLinks.push((await page.getAttribute('#rejoin-link', 'href')) ?? '');
      await page.waitForURL(/\/w\/[^/]+\/\d+\/$/, { timeout: 60_000 });
      await connected(page);
      await page.locator('#workshop-notice', { hasText: /^This workshop ends at .+ \(in [89] min\)/ }).waitFor({ timeout: 10_000 });
      await run(page, `echo hello-${name}-$((6*7)) | tee mine.txt`, `hello-${name}-42`);
      learners.push({ name, context, page });
    }
    const [ada, grace] = learners;
    assert.ok(ada && grace);
    assert.notEqual(new URL(ada.page.url()).pathname, new URL(grace.page.url()).pathname);
    // Each sees only their own shell: Grace's screen never shows Ada's command.
    assert.doesNotMatch((await grace.page.locator('.terminal-pane.active .xterm-rows').textContent()) ?? '', /hello-Ada/);
    await shot(ada.page, 'learner-ada');
    workshopId = new URL(ada.page.url()).pathname.split('/')[2] ?? '';
  });

  test('the dashboard shows both learners, and opens a learner’s workspace', async () => {
    await instructor.waitForFunction(
      () => {
        const names = [...document.querySelectorAll('#seat-rows td.learner')].map((c) => c.textContent);
        return names.includes('Ada') && names.includes('Grace');
      },
      undefined,
      { timeout: 30_000 },
    );
    await shot(instructor, 'dashboard-learners');
    const row = instructor.locator('#seat-rows tr', { has: instructor.locator('td.learner', { hasText: 'Ada' }) });
    const [tab] = await Promise.all([instructor.context().waitForEvent('page'), row.locator('button.open-workspace').click()]);
    await tab.waitForURL(/\/w\/[^/]+\/\d+\/$/, { timeout: 30_000 });
    assert.equal(new URL(tab.url()).pathname, new URL(learners[0]?.page.url() ?? '').pathname);
    await connected(tab);
    await run(tab, 'echo instructor-was-here-$((2+3))', 'instructor-was-here-5');
    await tab.close();
  });

  test('a learner who reloads, or opens /join again, is back in the same seat and shell', async () => {
    const ada = learners[0];
    assert.ok(ada);
    const seatPath = new URL(ada.page.url()).pathname;
    await ada.page.reload();
    await connected(ada.page);
    await screenShows(ada.page, 'hello-Ada-42');
    await ada.page.goto(`${server.url}/join`);
    await ada.page.waitForURL((url) => url.pathname === seatPath, { timeout: 30_000 });
    await connected(ada.page);
    // The personal link, opened in a browser that never joined, leads to the same seat.
    const elsewhere = await (await browser.newContext()).newPage();
    await elsewhere.goto(rejoinLinks[0] ?? '');
    await elsewhere.waitForURL((url) => url.pathname === seatPath, { timeout: 30_000 });
    await connected(elsewhere);
    await run(elsewhere, 'cat mine.txt', 'hello-Ada-42');
    await elsewhere.context().close();
  });

  test('the instructor reads a seat’s console, resets a seat after a confirmation, and adds a seat', async () => {
    const row = (seat: number) => instructor.locator(`#seat-rows tr[data-seat="${seat}"]`);
    await row(3).locator('button.read-console').click();
    await instructor.locator('#console-text', { hasText: 'clarateach-init' }).waitFor({ timeout: 10_000 });
    await instructor.click('#console-close');
    // Declining the confirmation changes nothing; accepting it gives the seat a fresh VM.
    instructor.once('dialog', (dialog) => void dialog.dismiss());
    await row(3).locator('button.reset').click();
    await instructor.waitForTimeout(500);
    assert.equal(await row(3).getAttribute('data-state'), 'ready');
    const pidBefore = await vmPid(3);
    instructor.once('dialog', (dialog) => void dialog.accept());
    await row(3).locator('button.reset').click();
    await instructor.waitForSelector('#seat-rows tr[data-seat="3"][data-state="provisioning"]', { timeout: 10_000 });
    await instructor.waitForSelector('#seat-rows tr[data-seat="3"][data-state="ready"]', { timeout: SEATS_READY_MS });
    assert.notEqual(await vmPid(3), pidBefore, 'a fresh VM');
    await instructor.fill('#add-count', '1');
    await instructor.click('#add-seats');
    await instructor.waitForSelector('#seat-rows tr[data-seat="4"][data-state="ready"]', { timeout: SEATS_READY_MS });
    await shot(instructor, 'dashboard-four-seats');
  });

  test('ending the workshop removes every VM on both agents', async () => {
    instructor.once('dialog', (dialog) => void dialog.accept());
    await instructor.click('#end');
    await instructor.waitForSelector('#ws-ended:text("Ended: 4 VMs removed.")', { timeout: 120_000 });
    await instructor.waitForSelector('#ws-meta:text-matches("^ended")');
    await shot(instructor, 'ended');
    for (const agent of agents) {
      const { vms } = (await (await agent.api('/vms')).json()) as VmList;
      assert.deepEqual(
        vms.filter((vm) => vm.workshop_id === workshopId),
        [],
      );
    }
    // A learner who comes back is told the workshop is over.
    const ada = learners[0];
    assert.ok(ada);
    await ada.page.goto(`${server.url}/join`);
    await ada.page.waitForSelector('#seat-state:text("This workshop has ended")', { timeout: 10_000 });
  });
});
