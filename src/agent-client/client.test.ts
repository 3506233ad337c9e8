// The client's own timeouts, against a stand-in agent on loopback that accepts connections and
// answers nothing until told: a quick call gives up as unreachable; a create that waits for
// `ready` is given its wait (and a margin), not the quick call's timeout.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { AgentClient, AgentError, AgentUnreachable } from './client.ts';
import { startSilentAgent, type SilentAgent } from '../../test/support/workshop-server.ts';

let agent: SilentAgent;

before(async () => {
  agent = await startSilentAgent();
});
after(async () => {
  await agent?.close();
});

test('a quick call to an agent that never answers fails as unreachable after its timeout', { timeout: 30_000 }, async () => {
  const client = new AgentClient(agent.url, undefined, { quickMs: 200, slowMs: 200, waitMarginMs: 200 });
  for (const call of [() => client.health(), () => client.listVms(), () => client.logs('ws', 1), () => client.deleteVm('ws', 1)]) {
    await assert.rejects(call(), (error: unknown) => {
      assert.ok(error instanceof AgentUnreachable, String(error));
      assert.match(error.message, /no answer within 0\.2 s/);
      return true;
    });
  }
});

test("a create that waits for ready is not cut at the quick call's timeout", { timeout: 30_000 }, async () => {
  const client = new AgentClient(agent.url, undefined, { quickMs: 50, slowMs: 50, waitMarginMs: 1000 });
  const asked = agent.requests.length;
  const created = client.createVm({ workshop_id: 'ws', seat_id: 1, wait: 'ready', wait_timeout_s: 30 });
  await agent.arrived(asked + 1);
  // Well past the quick timeout, well within the wait asked for.
  await sleep(500);
  agent.answer(504, 'not_ready');
  await assert.rejects(created, (error: unknown) => {
    assert.ok(error instanceof AgentError, `the agent's answer, not a timeout: ${String(error)}`);
    assert.equal(error.code, 'not_ready');
    return true;
  });
});
