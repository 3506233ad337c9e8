// The operators' guide's script, scripts/test-e2e-local.sh, against the real agent: 14/14 for
// 3 seats, with and without a token.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { requireTestNetns, startAgent } from '../support/agent-process.ts';

requireTestNetns();
const SCRIPT = new URL('../../scripts/test-e2e-local.sh', import.meta.url).pathname;

function runScript(env: Record<string, string>): { status: number | null; out: string } {
  const r = spawnSync('bash', [SCRIPT], { env: { ...process.env, TIMEOUT: '180', ...env }, encoding: 'utf8', timeout: 15 * 60_000 });
  return { status: r.status, out: r.stdout + r.stderr };
}

for (const token of [undefined, 'e2e-secret-token']) {
  test(`the guide's script passes 14/14 ${token ? 'with' : 'without'} a token`, { timeout: 20 * 60_000 }, async () => {
    const agent = await startAgent({ port: 19092, token });
    try {
      const env: Record<string, string> = { AGENT_URL: agent.url, WORKSHOP_ID: `e2e-${token ? 'token' : 'open'}` };
      if (token) env['AGENT_TOKEN'] = token;
      const { status, out } = runScript(env);
      assert.equal(status, 0, out);
      assert.match(out, /^ClaraTeach E2E Test - Local Firecracker$/m);
      assert.match(out, /\[✓\] Agent is healthy \(worker: it-worker\)/);
      assert.match(out, /\[✓\] Created VM seat 1 with IP 192\.168\.100\.11/);
      assert.match(out, /\[✓\] Created VM seat 3 with IP 192\.168\.100\.13/);
      assert.match(out, /^Passed: 14$/m);
      assert.match(out, /^Failed: 0$/m);
      assert.match(out, /^All tests passed!$/m);
      const left = (await (await agent.api('/vms')).json()) as { vms: unknown[] };
      assert.deepEqual(left.vms, [], 'the script cleans up after itself');
      if (token) {
        const wrong = runScript({ AGENT_URL: agent.url, AGENT_TOKEN: 'not-the-token', SEATS: '1' });
        assert.notEqual(wrong.status, 0, 'a wrong token makes the script fail');
        assert.match(wrong.out, /^Failed: [1-9]/m);
      }
    } finally {
      await agent.kill('SIGTERM');
    }
  });
}
