// The terminal through the agent's proxy, against a stand-in guest terminal server: the handshake
// the guest gets (no credentials), a subprotocol agreed end to end, and the guest's close code
// reaching the client as it was sent (in-process agent, stand-in VMM).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';
import { buildFuzzApi, FIRST_VM_IP } from '../../test/support/fuzz.ts';
import { TERMINAL_PORT } from './guest.ts';

test('the guest gets the handshake without the token, agrees a subprotocol with the client, adds no header of its own, and its close code reaches the client', async () => {
  const api = await buildFuzzApi({ agentToken: undefined, secret: undefined, capacity: 1 });
  const guest = new WebSocketServer({ host: FIRST_VM_IP, port: TERMINAL_PORT, handleProtocols: (offered) => [...offered].at(-1) ?? false });
  // A guest is the learner's: what it adds to its 101 must not reach the browser.
  guest.on('headers', (headers) => headers.push('Set-Cookie: session=from-the-guest'));
  const upgrades: IncomingMessage[] = [];
  guest.on('connection', (socket, request) => {
    upgrades.push(request);
    socket.on('message', (data: Buffer) => {
      if (data.toString() === 'bye') socket.close(4001, 'session over');
      else socket.send(`echo ${data.toString()}`);
    });
  });
  await new Promise((resolve) => guest.once('listening', resolve));
  try {
    await api.app.inject({ method: 'POST', url: '/vms', payload: { workshop_id: 'ws', seat_id: 1 } });
    await api.app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = api.app.server.address() as AddressInfo;
    const client = new WebSocket(`ws://127.0.0.1:${port}/proxy/ws/1/terminal?session=s1&token=learner-secret`, ['json', 'tty']);
    const answered = new Promise<IncomingMessage>((resolve) => client.once('upgrade', resolve));
    await new Promise((resolve, reject) => client.once('open', resolve).once('error', reject));
    const switched = await answered;
    assert.equal(switched.headers['set-cookie'], undefined, "the guest's own headers stay with the agent");
    assert.match(String(switched.headers['x-request-id']), /./, 'the answer carries its request id');
    assert.equal(client.protocol, 'tty', 'the subprotocol the guest chose');
    const echoed = new Promise<string>((resolve) => client.once('message', (data: Buffer) => resolve(data.toString())));
    client.send('ls');
    assert.equal(await echoed, 'echo ls');
    const closed = new Promise<[number, string]>((resolve) => client.once('close', (code, reason) => resolve([code, reason.toString()])));
    client.send('bye');
    assert.deepEqual(await closed, [4001, 'session over']);

    assert.equal(upgrades.length, 1);
    const request = upgrades[0];
    assert.equal(request?.url, '/terminal?session=s1', 'the learner token stays with the agent');
    assert.equal(request?.headers.authorization, undefined);
    assert.equal(request?.headers.cookie, undefined);
  } finally {
    for (const socket of guest.clients) socket.terminate();
    await new Promise((resolve) => guest.close(resolve));
    await api.app.close();
  }
});
