// The workshop server's command lines: `clarateach server` runs it; `instructor add` writes the
// first account straight into its database; `login` keeps a session for SERVER_URL; `workshop`
// and `worker` talk to the server's API. Tables by default, the API's JSON with --json.
import { Command, Option } from 'commander';
import { loadServerConfig } from '../server-config/config.ts';
import { openDatabase } from '../server-db/database.ts';
import { migrate } from '../server-db/migrations.ts';
import { SqlWorkshopRepository } from '../server-db/repository.ts';
import { hashPassword, MIN_PASSWORD_LENGTH } from '../server-api/passwords.ts';
import { newId } from '../workshops/codes.ts';
import { EXIT, UsageError, printJson, printTable } from './operator/output.ts';
import { addForegroundCommand } from './operator/program.ts';
import { ServerClient, saveSession, sessionsFile, storedToken } from './server-client.ts';

export interface ServerHandlers {
  runServer(flags: readonly string[]): Promise<number>;
  serverHelp(): string;
}

interface ServerOptions {
  serverUrl: string;
  json?: boolean;
}

interface WorkshopJson {
  id: string;
  name: string;
  seats: number;
  max_seats: number;
  template: string;
  join_code: string;
  state: string;
  starts_at: string;
  ends_at: string;
}
interface SeatJson {
  seat_id: number;
  state: string;
  worker_id: string | null;
  learner: { name: string } | null;
  last_activity_at: string | null;
}
interface WorkerJson {
  id: string;
  url: string;
  state: string;
  capacity: number | null;
  vm_count: number | null;
  last_error: string | null;
}

/** Reads the password from stdin (a pipe, or typed then Enter): its first line. */
async function readPassword(): Promise<string> {
  if (process.stdin.isTTY) process.stderr.write('password: ');
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) {
    chunks.push(chunk as Buffer);
    if (process.stdin.isTTY && Buffer.concat(chunks).includes(10)) break;
  }
  const password = Buffer.concat(chunks).toString('utf8').split(/\r?\n/)[0] ?? '';
  if (password === '') throw new UsageError('no password on stdin');
  return password;
}

/** `2h`, `90m`, `3600s` → milliseconds. */
export function parseDuration(text: string): number {
  const match = /^(\d+)([smhd])$/.exec(text);
  if (!match) throw new UsageError(`--duration must be like 90m or 3h, got "${text}"`);
  return Number(match[1]) * { s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as 's' | 'm' | 'h' | 'd'];
}

function positive(flag: string, text: string): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`${flag} must be a whole number, got "${text}"`);
  return Number(text);
}

function serverCommand(parent: Command, name: string): Command {
  return parent
    .command(name)
    .option('--json', 'print the API JSON instead of tables (for scripts)')
    .addOption(new Option('--server-url <url>', 'the workshop server').env('SERVER_URL').default('http://127.0.0.1:8080'));
}

export function addServerCommands(program: Command, h: ServerHandlers, exit: (code: number) => void): void {
  const done = (code: number = EXIT.ok): void => exit(code);
  const connect = (command: Command): { client: ServerClient; json: boolean; url: string } => {
    const o = command.optsWithGlobals<ServerOptions>();
    const url = o.serverUrl.replace(/\/+$/, '');
    return { client: new ServerClient(url, storedToken(sessionsFile(), url)), json: o.json === true, url };
  };

  addForegroundCommand(
    program,
    'server',
    'run the workshop server in the foreground (API, learner pages and proxy on PORT, default 8080); `server --help` lists its flags',
    { help: h.serverHelp, run: h.runServer },
    done,
  );

  program
    .command('instructor')
    .description("instructors' accounts")
    .command('add')
    .description(
      'add an instructor straight into the database (DATA_DIR or DATABASE_URL); the password comes from stdin. With the embedded database, stop the server first',
    )
    .argument('<email>')
    .option('--data-dir <dir>', 'the embedded database (env DATA_DIR)')
    .option('--database-url <url>', 'PostgreSQL (env DATABASE_URL)')
    .action(async (email: string, o: { dataDir?: string; databaseUrl?: string }) => {
      const flags = [...(o.dataDir ? ['--data-dir', o.dataDir] : []), ...(o.databaseUrl ? ['--database-url', o.databaseUrl] : [])];
      const config = loadServerConfig(process.env, flags);
      if (!/^[^\s@]+@[^\s@]+$/.test(email)) throw new UsageError(`"${email}" is not an email address`);
      const password = await readPassword();
      if (password.length < MIN_PASSWORD_LENGTH) throw new UsageError(`the password needs at least ${MIN_PASSWORD_LENGTH} characters`);
      const db = await openDatabase(config);
      try {
        await migrate(db);
        const created = await new SqlWorkshopRepository(db).addInstructor(
          newId('in'),
          email.trim().toLowerCase(),
          await hashPassword(password),
        );
        process.stdout.write(`added instructor ${created.email}\n`);
      } finally {
        await db.close();
      }
      done();
    });

  serverCommand(program, 'login')
    .description('log in to SERVER_URL (password from stdin) and keep the session in ~/.config/clarateach')
    .argument('<email>')
    .action(async (email: string, _o, command: Command) => {
      const { url, json } = connect(command);
      const password = await readPassword();
      const session = await new ServerClient(url, undefined).call<{ email: string; session_token: string; expires_at: string }>(
        'POST',
        '/api/login',
        {
          email,
          password,
          bearer: true,
        },
      );
      saveSession(sessionsFile(), url, { token: session.session_token, email: session.email, expires_at: session.expires_at });
      if (json) printJson({ email: session.email, expires_at: session.expires_at });
      else process.stdout.write(`logged in to ${url} as ${session.email} until ${session.expires_at}\n`);
      done();
    });

  addWorkshopCommands(program, connect, done);
  addWorkerCommands(program, connect, done);
}

type Connect = (command: Command) => { client: ServerClient; json: boolean; url: string };

function addWorkshopCommands(program: Command, connect: Connect, done: (code?: number) => void): void {
  const workshop = program.command('workshop').description('workshops on the workshop server (after `clarateach login`)');
  serverCommand(workshop, 'create')
    .description('create a workshop; prints its join code')
    .requiredOption('--name <name>', 'its name')
    .requiredOption('--seats <n>', 'seats made in advance')
    .option('--max-seats <n>', 'most seats joins may grow it to (default: --seats)')
    .option('--template <name>', 'the guest template (default: default)')
    .option('--memory-mb <n>', 'memory per seat (default 512)')
    .option('--starts-at <time>', 'ISO 8601 (default: now)')
    .option('--ends-at <time>', 'ISO 8601')
    .option('--duration <d>', 'instead of --ends-at: e.g. 3h', '3h')
    .option('--idle-timeout-s <n>', 'a seat left alone this long is idle (default 1800)')
    .action(
      async (
        o: {
          name: string;
          seats: string;
          maxSeats?: string;
          template?: string;
          memoryMb?: string;
          startsAt?: string;
          endsAt?: string;
          duration: string;
          idleTimeoutS?: string;
        },
        command: Command,
      ) => {
        const { client, json } = connect(command);
        const start = o.startsAt === undefined ? Date.now() : Date.parse(o.startsAt);
        if (Number.isNaN(start)) throw new UsageError('--starts-at must be an ISO 8601 time');
        const created = await client.call<WorkshopJson>('POST', '/api/workshops', {
          name: o.name,
          seats: positive('--seats', o.seats),
          ...(o.maxSeats ? { max_seats: positive('--max-seats', o.maxSeats) } : {}),
          ...(o.template ? { template: o.template } : {}),
          ...(o.memoryMb ? { memory_mb: positive('--memory-mb', o.memoryMb) } : {}),
          ...(o.idleTimeoutS ? { idle_timeout_s: positive('--idle-timeout-s', o.idleTimeoutS) } : {}),
          starts_at: new Date(start).toISOString(),
          ends_at: o.endsAt ?? new Date(start + parseDuration(o.duration)).toISOString(),
        });
        if (json) printJson(created);
        else
          process.stdout.write(
            `created ${created.id} "${created.name}": join code ${created.join_code}, ${created.seats} seats, ends ${created.ends_at}\n`,
          );
        done();
      },
    );
  serverCommand(workshop, 'ls')
    .description('your workshops')
    .action(async (_o, command: Command) => {
      const { client, json } = connect(command);
      const { workshops } = await client.call<{ workshops: WorkshopJson[] }>('GET', '/api/workshops');
      if (json) printJson({ workshops });
      else
        printTable(
          ['id', 'name', 'code', 'seats', 'state', 'ends'],
          workshops.map((w) => [w.id, w.name, w.join_code, w.seats, w.state, w.ends_at]),
        );
      done();
    });
  serverCommand(workshop, 'show')
    .description('a workshop and its seats')
    .argument('<id>')
    .action(async (id: string, _o, command: Command) => {
      const { client, json } = connect(command);
      const shown = await client.call<{ workshop: WorkshopJson; seats: SeatJson[] }>('GET', `/api/workshops/${encodeURIComponent(id)}`);
      if (json) printJson(shown);
      else {
        const w = shown.workshop;
        process.stdout.write(`${w.id} "${w.name}" (${w.state}): join code ${w.join_code}, ${w.starts_at} to ${w.ends_at}\n`);
        printTable(
          ['seat', 'state', 'learner', 'worker', 'last activity'],
          shown.seats.map((s) => [s.seat_id, s.state, s.learner?.name, s.worker_id, s.last_activity_at]),
        );
      }
      done();
    });
  serverCommand(workshop, 'end')
    .description('end a workshop: every seat VM is removed from its worker')
    .argument('<id>')
    .action(async (id: string, _o, command: Command) => {
      const { client, json } = connect(command);
      const ended = await client.call<{ removed: number; failed: number }>('POST', `/api/workshops/${encodeURIComponent(id)}/end`);
      if (json) printJson(ended);
      else
        process.stdout.write(`ended ${id}: ${ended.removed} VMs removed${ended.failed ? `, ${ended.failed} could not be removed` : ''}\n`);
      done();
    });
}

function addWorkerCommands(program: Command, connect: Connect, done: (code?: number) => void): void {
  const worker = program.command('worker').description('workers (agents) of the workshop server');
  serverCommand(worker, 'add')
    .description('register a worker by its agent URL')
    .argument('<url>')
    .option('--token <token>', "the agent's AGENT_TOKEN (env WORKER_TOKEN)")
    .option('--id <id>', 'its name on the server (default: from the URL)')
    .option('--memory-mb <n>', 'memory the server may place seats in (default: not limited by the server)')
    .action(async (url: string, o: { token?: string; id?: string; memoryMb?: string }, command: Command) => {
      const { client, json } = connect(command);
      const token = o.token ?? process.env['WORKER_TOKEN'];
      const added = await client.call<WorkerJson>('POST', '/api/workers', {
        url,
        ...(token ? { token } : {}),
        ...(o.id ? { id: o.id } : {}),
        ...(o.memoryMb ? { memory_mb: positive('--memory-mb', o.memoryMb) } : {}),
      });
      if (json) printJson(added);
      else
        process.stdout.write(
          `added worker ${added.id} (${added.url}): ${added.state}${added.last_error ? ` — ${added.last_error}` : ''}\n`,
        );
      done();
    });
  serverCommand(worker, 'ls')
    .description('the workers and their state')
    .action(async (_o, command: Command) => {
      const { client, json } = connect(command);
      const { workers } = await client.call<{ workers: WorkerJson[] }>('GET', '/api/workers');
      if (json) printJson({ workers });
      else
        printTable(
          ['id', 'url', 'state', 'capacity', 'vms', 'last error'],
          workers.map((w) => [w.id, w.url, w.state, w.capacity, w.vm_count, w.last_error]),
        );
      done();
    });
  serverCommand(worker, 'rm')
    .description('remove a worker (refused while it holds seats of active workshops)')
    .argument('<id>')
    .action(async (id: string, _o, command: Command) => {
      const { client, json } = connect(command);
      await client.call('DELETE', `/api/workers/${encodeURIComponent(id)}`);
      if (json) printJson({ removed: id });
      else process.stdout.write(`removed worker ${id}\n`);
      done();
    });
}
