// Network isolation, from inside real guests: one learner reaches no other learner, no port of the
// host, and no metadata service; the internet (a stand-in host in a second namespace this test
// makes) is reachable through NAT, which proves the probes can succeed. Learner tokens, and a
// learner without root, through the real proxy.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { json, requireTestNetns, startAgent, type AgentProcess } from '../support/agent-process.ts';
import { TerminalClient } from '../support/terminal-client.ts';

const NETNS = requireTestNetns();
const INTERNET_NS = `${NETNS}-inet`;
const TOKEN = 'isolation-agent-token';
const SECRET = 'isolation-workspace-token-secret-0123456789';
const PORT = 19095;

function sh(command: string, args: string[]): string {
  const r = spawnSync(command, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${command} ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

interface Seat {
  ws: string;
  seat: number;
  ip: string;
  term: TerminalClient;
}

describe('isolation between learners, the host and the cloud', { timeout: 20 * 60_000 }, () => {
  let agent: AgentProcess;
  let internet: ChildProcess;
  let metadata: Server;
  let hostPort: TcpServer;
  const metadataHits: string[] = [];
  const hostPortHits: string[] = [];
  const seats: Seat[] = [];

  before(async () => {
    // The "cloud": a metadata service on 169.254.169.254 and a default route out of this namespace
    // to a stand-in internet host, 203.0.113.10, in a second namespace.
    sh('ip', ['addr', 'add', '169.254.169.254/32', 'dev', 'lo']);
    sh('ip', ['netns', 'add', INTERNET_NS]);
    sh('ip', ['link', 'add', 'uplink0', 'type', 'veth', 'peer', 'name', 'wan0', 'netns', INTERNET_NS]);
    sh('ip', ['addr', 'add', '203.0.113.1/24', 'dev', 'uplink0']);
    sh('ip', ['link', 'set', 'uplink0', 'up']);
    sh('ip', ['route', 'add', 'default', 'via', '203.0.113.10']);
    sh('ip', ['-n', INTERNET_NS, 'addr', 'add', '203.0.113.10/24', 'dev', 'wan0']);
    sh('ip', ['-n', INTERNET_NS, 'link', 'set', 'wan0', 'up']);
    sh('ip', ['-n', INTERNET_NS, 'link', 'set', 'lo', 'up']);
    internet = spawn(
      'ip',
      [
        'netns',
        'exec',
        INTERNET_NS,
        process.execPath,
        '-e',
        "require('http').createServer((q,s)=>s.end('internet-ok from '+q.socket.remoteAddress)).listen(8080,'203.0.113.10')",
      ],
      { stdio: 'ignore' },
    );
    metadata = createServer((req, res) => {
      metadataHits.push(`${req.socket.remoteAddress} ${req.url}`);
      res.end('{"token":"cloud-credentials"}');
    }).listen(80, '169.254.169.254');
    hostPort = createTcpServer((socket) => {
      hostPortHits.push(String(socket.remoteAddress));
      socket.end('host-service\n');
    }).listen(18080, '0.0.0.0');

    // Exposed on every address, the bridge's included: reachable by a guest unless the firewall stops it.
    agent = await startAgent({ port: PORT, token: TOKEN, env: { HOST: '0.0.0.0', WORKSPACE_TOKEN_SECRET: SECRET, EGRESS: 'nat' } });
    const wanted: [string, number][] = [
      ['team-a', 1],
      ['team-a', 2],
      ['team-b', 1],
    ];
    const created = await Promise.all(
      wanted.map(async ([ws, seat]) => {
        const res = await agent.api('/vms', json({ workshop_id: ws, seat_id: seat, wait: 'ready', wait_timeout_s: 240 }));
        const body = (await res.json()) as { ip: string };
        assert.equal(res.status, 201, JSON.stringify(body));
        return { ws, seat, ip: body.ip };
      }),
    );
    for (const vm of created) {
      const term = TerminalClient.connect(`ws://127.0.0.1:${PORT}/proxy/${vm.ws}/${vm.seat}/terminal`, {
        headers: { authorization: `Bearer ${TOKEN}` },
        timeoutMs: 60_000,
      });
      await term.opened;
      seats.push({ ...vm, term });
    }
  });

  after(async () => {
    seats.forEach((s) => s.term.close());
    await Promise.all(seats.map((s) => agent.api(`/vms/${s.ws}/${s.seat}`, { method: 'DELETE' })));
    await agent.kill('SIGTERM');
    internet.kill('SIGKILL');
    metadata.close();
    hostPort.close();
    spawnSync('ip', ['netns', 'del', INTERNET_NS]);
  });

  const seat = (ws: string, n: number): Seat => {
    const s = seats.find((x) => x.ws === ws && x.seat === n);
    assert.ok(s);
    return s;
  };

  test('positive control: a guest reaches the internet through NAT', async () => {
    const out = await seat('team-a', 1).term.run('curl -sS -m 10 http://203.0.113.10:8080/');
    assert.match(out, /internet-ok from 203\.0\.113\.1/, 'the source address is the host (masquerade)');
  });

  test('no ping, TCP or UDP between VMs, in the same workshop or another', async () => {
    const a1 = seat('team-a', 1);
    for (const target of [seat('team-a', 2), seat('team-b', 1)]) {
      assert.match(await a1.term.run(`ping -c 2 -W 1 ${target.ip} >/dev/null 2>&1; echo ping=$?`), /ping=[12]/, `ping ${target.ip}`);
      // Port 3002 is the target's file server: listening, so only the firewall can stop this.
      assert.match(
        await a1.term.run(`timeout 4 bash -c 'echo > /dev/tcp/${target.ip}/3002' 2>/dev/null; echo tcp=$?`),
        /tcp=(1|124)/,
        `tcp ${target.ip}`,
      );
      await target.term.run(
        `rm -f /tmp/udp.out; (timeout 6 python3 -c "import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('0.0.0.0',5555));print('GOT',s.recvfrom(64))" > /tmp/udp.out 2>&1 &)`,
      );
      // Only a bound listener makes "nothing received" mean something (5555 = 0x15B3).
      for (let tries = 0; !/bound/.test(await target.term.run("grep -q ':15B3 ' /proc/net/udp && echo bound || echo waiting")); tries++) {
        assert.ok(tries < 40, `the UDP listener on ${target.ip} is bound`);
        await sleep(250);
      }
      await a1.term.run(`for i in 1 2 3 4 5; do echo hello > /dev/udp/${target.ip}/5555; sleep 0.2; done`);
      await sleep(5000);
      assert.doesNotMatch(await target.term.run('cat /tmp/udp.out'), /GOT/, `udp to ${target.ip}`);
    }
  });

  test('no port of the host: neither the agent API nor anything else on the bridge address', async () => {
    const a1 = seat('team-b', 1);
    assert.match(await a1.term.run(`curl -sS -m 4 -o /dev/null http://192.168.100.1:${PORT}/health; echo curl=$?`), /curl=(7|28)/);
    assert.match(await a1.term.run('curl -sS -m 4 http://192.168.100.1:18080/; echo curl=$?'), /curl=(7|28|56)/);
    assert.match(await a1.term.run('curl -sS -m 4 http://203.0.113.1:18080/; echo curl=$?'), /curl=(7|28|56)/);
    assert.match(await a1.term.run('ping -c 2 -W 1 192.168.100.1 >/dev/null 2>&1; echo ping=$?'), /ping=[12]/);
    assert.deepEqual(hostPortHits, []);
  });

  test('no link-local address: the metadata service sees no request from any guest', async () => {
    for (const s of seats) {
      assert.match(await s.term.run('curl -sS -m 4 http://169.254.169.254/computeMetadata/v1/; echo curl=$?'), /curl=(7|28)/);
    }
    // The stand-in works: from the host side it answers.
    const res = await fetch('http://169.254.169.254/probe');
    assert.equal(res.status, 200);
    assert.deepEqual(
      metadataHits.filter((h) => !h.endsWith('/probe')),
      [],
    );
  });

  test('the learner is not root in the guest', async () => {
    const s = seat('team-a', 2);
    assert.equal(await s.term.run('id -u'), '1000\n');
    assert.match(await s.term.run('sudo -n true 2>&1; echo sudo=$?'), /sudo=(1|127)/);
    assert.match(await s.term.run('cat /etc/shadow 2>&1; echo cat=$?'), /Permission denied[\s\S]*cat=1/);
  });

  test('a learner token opens its own seat only, as a header or ?token= for WebSockets, and never appears in logs', async () => {
    const issued = await agent.api('/vms/team-a/1/token', json({ ttl_s: 300 }));
    assert.equal(issued.status, 201);
    const { token } = (await issued.json()) as { token: string };
    const own = TerminalClient.connect(`ws://127.0.0.1:${PORT}/proxy/team-a/1/terminal?token=${token}`);
    await own.opened;
    assert.equal(await own.run('echo mine'), 'mine\n');
    own.close();
    const other = TerminalClient.connect(`ws://127.0.0.1:${PORT}/proxy/team-a/2/terminal?token=${token}`);
    await assert.rejects(other.opened, /HTTP 403/);
    const files = await fetch(`http://127.0.0.1:${PORT}/proxy/team-a/1/files/`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(files.status, 200);
    assert.equal(
      (await fetch(`http://127.0.0.1:${PORT}/proxy/team-b/1/files/`, { headers: { authorization: `Bearer ${token}` } })).status,
      403,
    );
    assert.equal((await fetch(`http://127.0.0.1:${PORT}/vms`, { headers: { authorization: `Bearer ${token}` } })).status, 403);
    const logs = agent.logs();
    assert.ok(!logs.includes(token), 'the learner token is not in the agent log');
    assert.ok(!logs.includes(TOKEN), 'the agent token is not in the agent log');
  });

  test('EGRESS none and allow-lists hold for running VMs once the agent restarts with them', async () => {
    const cases: [string, boolean][] = [
      ['none', false],
      ['203.0.113.10/32:8080', true],
      ['203.0.113.10/32:9999', false],
      ['nat', true],
    ];
    for (const [egress, reachable] of cases) {
      await agent.kill('SIGTERM');
      agent = await startAgent({
        port: PORT,
        token: TOKEN,
        stateDir: agent.stateDir,
        env: { HOST: '0.0.0.0', WORKSPACE_TOKEN_SECRET: SECRET, EGRESS: egress },
      });
      const term = TerminalClient.connect(`ws://127.0.0.1:${PORT}/proxy/team-a/1/terminal`, {
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      await term.opened;
      const out = await term.run('curl -sS -m 5 http://203.0.113.10:8080/; echo " curl=$?"');
      term.close();
      if (reachable) assert.match(out, /internet-ok/, `EGRESS=${egress}: ${out}`);
      else assert.match(out, /curl=(7|28)/, `EGRESS=${egress}: ${out}`);
    }
  });
});
