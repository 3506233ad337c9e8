// The guest init scripts: syntax, and the kernel command line parsing of clarateach-init (its
// functions are sourced into a plain bash; nothing is mounted or configured).
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as pty from 'node-pty';
import { GUEST_CONTRACT_PATH, GUEST_PORTS, guestContractEnv } from '../contract.ts';

const here = dirname(fileURLToPath(import.meta.url));
const INIT = join(here, 'clarateach-init');
const INITRD_INIT = join(here, 'initrd-init');

function bash(script: string): string {
  return execFileSync('bash', ['-c', `source ${JSON.stringify(INIT)}\n${script}`], { encoding: 'utf8' });
}

test('both init scripts are valid shell', () => {
  execFileSync('bash', ['-n', INIT]);
  execFileSync('sh', ['-n', INITRD_INIT]);
  execFileSync('busybox', ['sh', '-n', INITRD_INIT]);
});

test('sourcing clarateach-init does not run it', () => {
  assert.equal(bash('echo sourced'), 'sourced\n');
});

test('netmasks become prefix lengths', () => {
  assert.equal(
    bash(
      'mask_to_prefix 255.255.255.0; mask_to_prefix 255.255.0.0; mask_to_prefix 255.255.255.252; mask_to_prefix 24; mask_to_prefix 255.0.255.0',
    ),
    '24\n16\n30\n24\n\n',
  );
});

test('ip= in the standard form', () => {
  const out = bash(`
    parse_cmdline "console=ttyS0 ip=192.168.100.11::192.168.100.1:255.255.255.0:seat-1:eth0:off clarateach.dns=1.1.1.1,9.9.9.9 panic=1"
    parse_ip_arg
    echo "$NET_MODE|$NET_CLIENT|$NET_GW|$NET_PREFIX|$NET_HOST|$NET_DEV|\${NET_DNS[*]}|$NET_ERROR"`);
  assert.equal(out, 'static|192.168.100.11|192.168.100.1|24|seat-1|eth0|1.1.1.1 9.9.9.9|\n');
});

test('ip= with dns fields, no gateway, default device', () => {
  const out = bash(`
    parse_cmdline "ip=10.0.0.2:::16::::8.8.8.8:8.8.4.4"
    parse_ip_arg
    echo "$NET_MODE|$NET_CLIENT|$NET_GW|$NET_PREFIX|$NET_HOST|$NET_DEV|\${NET_DNS[*]}|$NET_ERROR"`);
  assert.equal(out, 'static|10.0.0.2||16||eth0|8.8.8.8 8.8.4.4|\n');
});

test('ip= that cannot be used is reported, ip=off and dhcp are recognised', () => {
  assert.equal(bash('IP_ARG=":::255.255.255.0"; parse_ip_arg; echo "$NET_ERROR"'), 'no client address\n');
  assert.equal(bash('IP_ARG="10.0.0.2:::255.0.255.0"; parse_ip_arg; echo "$NET_ERROR"'), 'bad netmask 255.0.255.0\n');
  assert.equal(bash('IP_ARG=off; parse_ip_arg; echo "$NET_MODE"'), 'none\n');
  assert.equal(bash('IP_ARG=dhcp; parse_ip_arg; echo "$NET_MODE"'), 'auto\n');
  assert.equal(bash('parse_cmdline "quiet"; parse_ip_arg; echo "$NET_MODE"'), 'none\n');
});

test('ACPI power-off is detected from an _S5 object in the DSDT', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ct-dsdt-'));
  try {
    writeFileSync(
      join(dir, 'with'),
      Buffer.concat([Buffer.from('DSDT\0\0\x01'), Buffer.from([0, 0x08]), Buffer.from('_S5_\x12\x06'), Buffer.alloc(8)]),
    );
    writeFileSync(join(dir, 'without'), Buffer.concat([Buffer.from('DSDT\0\0\x01'), Buffer.alloc(64, 0x5f)]));
    const check = (file: string): string => bash(`acpi_can_power_off ${JSON.stringify(join(dir, file))} && echo yes || echo no`);
    assert.equal(check('with'), 'yes\n');
    assert.equal(check('without'), 'no\n');
    assert.equal(check('missing'), 'no\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('halt, services, epoch and hostname arguments', () => {
  const out = bash(`
    parse_cmdline "clarateach.halt=reboot clarateach.services=0 clarateach.epoch=1700000000 clarateach.hostname=box *"
    echo "$HALT|$SERVICES_ARG|$EPOCH_ARG|$HOSTNAME_ARG"`);
  assert.equal(out, 'reboot|0|1700000000|box\n');
});

test('service settings from services.env: TERMINAL_* and FILES_* lines only, others reported', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ct-init-'));
  try {
    const env = join(dir, 'services.env');
    writeFileSync(
      env,
      [
        '# comment',
        'TERMINAL_DETACHED_TTL_S=7200',
        'FILES_MAX_UPLOAD_BYTES=1073741824',
        'PATH=/evil',
        'LD_PRELOAD=/x.so',
        '',
        'TERMINAL_SHELL_X=a b',
      ].join('\n'),
    );
    const out = bash(
      `SERVICES_ENV=${JSON.stringify(env)}; log() { echo "LOG $*"; }; read_service_settings; printf '[%s]\\n' "\${SERVICE_SETTINGS[@]}"`,
    );
    assert.match(out, /^\[TERMINAL_DETACHED_TTL_S=7200\]$/m);
    assert.match(out, /^\[FILES_MAX_UPLOAD_BYTES=1073741824\]$/m);
    assert.match(out, /^\[TERMINAL_SHELL_X=a b\]$/m);
    assert.doesNotMatch(out, /^\[(PATH|LD_PRELOAD)/m);
    assert.match(out, /LOG ignoring line of .*: PATH=\/evil/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the init takes the service ports from the contract file the image writes, and refuses without one', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ct-contract-'));
  try {
    const file = join(dir, 'guest.env');
    writeFileSync(file, guestContractEnv());
    assert.equal(
      bash(`GUEST_CONTRACT=${JSON.stringify(file)}; read_guest_contract; echo "\${SERVICE_PORT[terminal]} \${SERVICE_PORT[files]}"`),
      `${GUEST_PORTS.terminal} ${GUEST_PORTS.files}\n`,
    );
    const missing = bash(`GUEST_CONTRACT=${JSON.stringify(join(dir, 'none'))}; read_guest_contract && echo started || echo refused`);
    assert.match(missing, /guest\.env|none is missing/);
    assert.match(missing, /refused\n$/);
    writeFileSync(file, 'CLARATEACH_TERMINAL_PORT=3001\nCLARATEACH_FILES_PORT=x\n');
    assert.match(
      bash(`GUEST_CONTRACT=${JSON.stringify(file)}; read_guest_contract || echo refused`),
      /no valid port for files[\s\S]*refused\n$/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the init looks for the contract where the image build writes it', () => {
  assert.equal(bash('echo "$CONTRACT_FILE"'), `${GUEST_CONTRACT_PATH}\n`);
});

test('the contract file is plain shell assignments', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ct-contract-'));
  try {
    const file = join(dir, 'guest.env');
    writeFileSync(file, guestContractEnv());
    assert.equal(
      execFileSync('bash', ['-c', 'source "$1"; echo "$CLARATEACH_TERMINAL_PORT $CLARATEACH_FILES_PORT"', 'bash', file], {
        encoding: 'utf8',
      }),
      `${GUEST_PORTS.terminal} ${GUEST_PORTS.files}\n`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a template waits for its services: ports_listening reads LISTEN sockets from /proc/net/tcp', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ct-init-tcp-'));
  try {
    const tcp = join(dir, 'tcp');
    const header = '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n';
    // 3001 = 0BB9 listening; 3002 = 0BBA only as an established connection's local port.
    writeFileSync(
      tcp,
      header +
        '   0: 00000000:0BB9 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0 100 0 0 10 0\n' +
        '   1: 0B64A8C0:0BBA 0164A8C0:D431 01 00000000:00000000 00:00000000 00000000  1000        0 2 1 0 20 4 30 10 -1\n',
    );
    const check = (ports: string): string => bash(`PROC_NET_TCP=${JSON.stringify(tcp)}; ports_listening ${ports} && echo yes || echo no`);
    assert.equal(check(String(GUEST_PORTS.terminal)), 'yes\n');
    assert.equal(check(`${GUEST_PORTS.terminal} ${GUEST_PORTS.files}`), 'no\n');
    writeFileSync(
      tcp,
      header +
        '   0: 00000000:0BB9 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1 1 0 100 0 0 10 0\n' +
        '   1: 00000000:0BBA 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 3 1 0 100 0 0 10 0\n',
    );
    assert.equal(check(`${GUEST_PORTS.terminal} ${GUEST_PORTS.files}`), 'yes\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/**
 * Runs the identity agent on a terminal of its own (standing in for the virtio port), hands it
 * `lines`, and returns what it wrote and its exit code. Only lines it must refuse are handed to
 * it: a valid one would set this machine's clock and network.
 */
async function identityAgent(lines: readonly string[]): Promise<{ output: string; code: number }> {
  const script = `stty raw -echo; source ${JSON.stringify(INIT)}; exec perl -e "$IDENTITY_AGENT" /dev/tty clarateach-identity/1`;
  const term = pty.spawn('bash', ['-c', script], { cols: 200, rows: 20 });
  let output = '';
  term.onData((data) => (output += data));
  const exited = new Promise<number>((resolve) => term.onExit(({ exitCode }) => resolve(exitCode)));
  for (let waited = 0; !output.includes('ready'); waited += 20) {
    assert.ok(waited < 10_000, `the agent says ready: ${JSON.stringify(output)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  for (const line of lines) term.write(`${line}\n`);
  const code = await exited;
  return { output, code };
}

const SEED = 'ab'.repeat(64);
const LINE = (fields: string): string => `clarateach-identity/1 ${fields}`;
const GOOD = {
  ip: '10.9.0.2',
  prefix: '24',
  gw: '10.9.0.1',
  mac: '06:00:0a:09:00:02',
  host: 'seat-1',
  seed: SEED,
  epoch_ms: '1790000000000',
};
const fields = (over: Record<string, string>): string =>
  Object.entries({ ...GOOD, ...over })
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');

test('the identity agent says ready, skips empty lines, and refuses a line with a bad field, saying which', async () => {
  const cases: [string, RegExp][] = [
    [LINE(fields({ seed: 'abc' })), /identity-error bad seed/],
    [LINE(fields({ ip: '300.1.1.1' })), /identity-error bad address ip=300\.1\.1\.1/],
    [LINE(fields({ prefix: '33' })), /identity-error bad prefix 33/],
    [LINE(fields({ mac: '06:00:0A:09:00:02' })), /identity-error bad mac/],
    [LINE(fields({ host: '-seat' })), /identity-error bad host name -seat/],
    [LINE(fields({ epoch_ms: '12' })), /identity-error bad epoch_ms 12/],
    [LINE(`${fields({})} dns=1.1.1.1,x`), /identity-error bad dns x/],
    [`clarateach-identity/2 ${fields({})}`, /identity-error unknown identity version 'clarateach-identity\/2'/],
  ];
  for (const [line, expected] of cases) {
    const { output, code } = await identityAgent(['', line]);
    assert.match(output, expected, line);
    assert.match(output, /clarateach-init: identity: error: /);
    assert.equal(code, 1);
  }
});

test('a virtio vsock device (id 0x0013) is told from the others', () => {
  const dir = mkdtempSync(join(tmpdir(), 'virtio-'));
  try {
    const device = (name: string, id: string): void => {
      execFileSync('mkdir', ['-p', join(dir, name)]);
      writeFileSync(join(dir, name, 'device'), `${id}\n`);
    };
    device('virtio0', '0x0002');
    device('virtio1', '0x0001');
    assert.equal(bash(`has_virtio_vsock ${JSON.stringify(dir)} && echo yes || echo no`), 'no\n');
    device('virtio2', '0x0013');
    assert.equal(bash(`has_virtio_vsock ${JSON.stringify(dir)} && echo yes || echo no`), 'yes\n');
    assert.equal(bash('has_virtio_vsock /nonexistent && echo yes || echo no'), 'no\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the vsock address is the host's (CID 2) port 52 as struct sockaddr_vm", () => {
  const addr = Buffer.alloc(16);
  addr.writeUInt16LE(40, 0); // AF_VSOCK
  addr.writeUInt32LE(52, 4);
  addr.writeUInt32LE(2, 8); // VMADDR_CID_HOST
  assert.equal(bash('echo "$IDENTITY_VSOCK_ADDR $IDENTITY_VSOCK_PORT"'), `${addr.toString('hex')} 52\n`);
});

/** struct sockaddr_un of `path`, hex: the agent's socket channel over a unix socket instead of vsock. */
function unixAddrHex(path: string): string {
  return Buffer.concat([Buffer.from([1, 0]), Buffer.from(path), Buffer.from([0])]).toString('hex');
}

/**
 * A host end: the first connection is closed after its "ready" (the reset a restore makes), the
 * second gets `line`; resolves with what each connection said.
 */
function hostEnd(path: string, line: string): { server: Server; said: Promise<string[][]> } {
  const said: string[][] = [];
  let done: (value: string[][]) => void = () => undefined;
  const finished = new Promise<string[][]>((resolve) => (done = resolve));
  const server = createServer((socket) => {
    const mine: string[] = [];
    said.push(mine);
    const index = said.length;
    let buffer = '';
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      buffer += chunk;
      for (let end = buffer.indexOf('\n'); end >= 0; end = buffer.indexOf('\n')) {
        mine.push(buffer.slice(0, end));
        buffer = buffer.slice(end + 1);
        if (mine.length === 1 && index === 1) socket.destroy();
        else if (mine.length === 1) socket.write(`${line}\n`);
        else socket.end();
      }
    });
    socket.on('close', () => {
      if (index === 2) done(said);
    });
  });
  server.listen(path);
  return { server, said: finished };
}

test('over a socket (vsock under Firecracker) the identity agent connects again after a reset and answers on the new connection', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ident-'));
  const path = join(dir, 'v.sock_52');
  // A line it must refuse: a valid one would set this machine's clock and network.
  const host = hostEnd(path, LINE(fields({ seed: 'abc' })));
  try {
    const script = `source ${JSON.stringify(INIT)}\nexec perl -e "$IDENTITY_AGENT" socket:1:${unixAddrHex(path)} clarateach-identity/1`;
    const child = spawn('bash', ['-c', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => (out += chunk));
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, 1, out);
    assert.deepEqual(await host.said, [['ready'], ['ready', 'identity-error bad seed']]);
    assert.match(out, /clarateach-init: identity: error: bad seed/);
  } finally {
    host.server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a template warms each service with one GET /health over /dev/tcp, and a closed port costs nothing', async () => {
  const { createServer: createHttpServer } = await import('node:http');
  const seen: string[] = [];
  const server = createHttpServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    res.end('{"status":"ok"}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const address = server.address();
    assert.ok(address && typeof address === 'object');
    const run = (port: number): Promise<string> =>
      new Promise((resolve, reject) => {
        const child = spawn('bash', ['-c', `source ${JSON.stringify(INIT)}\nwarm_service ${port}`], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        child.stdout.setEncoding('utf8');
        child.stdout.on('data', (chunk: string) => (out += chunk));
        child.stderr.setEncoding('utf8');
        child.stderr.on('data', (chunk: string) => (out += `stderr: ${chunk}`));
        child.on('error', reject);
        child.on('close', () => resolve(out));
      });
    assert.equal(await run(address.port), `clarateach-init: service on port ${address.port} warmed: HTTP/1.1 200 OK\n`);
    assert.deepEqual(seen, ['GET /health']);
    server.close();
    await once(server, 'close');
    assert.equal(await run(address.port), '', 'nothing listens: nothing to warm, no error');
  } finally {
    server.close();
  }
});
