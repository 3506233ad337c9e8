// The `clarateach` command line (commander): the agent, the image build, and the operator's
// commands that talk to an agent at AGENT_URL with AGENT_TOKEN.
import { Command, Option } from 'commander';
import { AgentClient } from '../../agent-client/client.ts';
import { copy } from './cp.ts';
import { printJson } from './output.ts';
import { shell } from './shell.ts';
import { health, issueToken, listVms, logs, parsePositive, parseSeat, showVm } from './vms.ts';

export interface Handlers {
  /** `clarateach agent [flags]`: flags exactly as the agent's configuration reads them. */
  runAgent(flags: readonly string[]): Promise<number>;
  agentHelp(): string;
  imageBuild(options: { template?: string; imagesDir?: string; recipe?: string; force?: boolean }): Promise<void>;
  version: string;
}

interface GlobalOptions {
  agentUrl: string;
  agentToken?: string;
  json?: boolean;
}

/** Builds the program; `exit` receives the command's exit code. */
/** The connection and output options, also accepted after an operator command. */
function operatorCommand(parent: Command, name: string): Command {
  return parent
    .command(name)
    .option('--json', 'print the API JSON instead of tables (for scripts)')
    .option('--agent-url <url>', 'the agent to talk to (env AGENT_URL)')
    .option('--agent-token <token>', 'its bearer token (env AGENT_TOKEN)');
}

/**
 * `clarateach NAME [flags...]`: a process that runs in the foreground, its flags passed through
 * whole to its own configuration parser (which names a bad one); `--help` prints `help()`.
 */
export function addForegroundCommand(
  program: Command,
  name: string,
  description: string,
  h: { help(): string; run(flags: readonly string[]): Promise<number> },
  done: (code?: number) => void,
): void {
  program
    .command(name)
    .description(description)
    .helpOption(false)
    .allowUnknownOption()
    .allowExcessArguments()
    .passThroughOptions()
    .argument('[flags...]')
    .action(async (flags: string[]) => {
      if (flags.includes('--help') || flags.includes('-h')) {
        process.stdout.write(h.help());
        return done();
      }
      done(await h.run(flags));
    });
}

export function buildProgram(h: Handlers, exit: (code: number) => void): Command {
  const program = new Command('clarateach')
    .description('ClaraTeach: the worker agent, its guest images, and commands for operators')
    .version(h.version, '-v, --version')
    .enablePositionalOptions()
    .addOption(new Option('--agent-url <url>', 'the agent to talk to').env('AGENT_URL').default('http://127.0.0.1:9090'))
    .addOption(new Option('--agent-token <token>', 'its bearer token').env('AGENT_TOKEN'))
    .option('--json', 'print the API JSON instead of tables (for scripts)')
    // Errors on one line, as the agent's own: `clarateach: missing required argument 'seat'`.
    .configureOutput({ outputError: (text, write) => write(`clarateach: ${text.replace(/^error: /, '').trimEnd()} (see --help)\n`) })
    // Before the subcommands: they copy it. Usage errors then reach the caller, which exits with 2.
    .exitOverride();

  const client = (command: Command): { client: AgentClient; json: boolean } => {
    // The agent URL and token may also come after the command (`clarateach vm ls --json`).
    const o = command.optsWithGlobals<GlobalOptions>();
    return { client: new AgentClient(o.agentUrl, o.agentToken), json: o.json === true };
  };
  const done = (code = 0): void => exit(code);

  addForegroundCommand(
    program,
    'agent',
    'run the worker agent in the foreground (REST API on PORT, default 9090); `agent --help` lists its flags',
    { help: h.agentHelp, run: h.runAgent },
    done,
  );

  program
    .command('image')
    .description('guest images')
    .command('build')
    .description("build a template's kernel, initrd and rootfs (default template: into IMAGES_DIR); quick when nothing changed")
    .option('--template <name>', 'which template (another than "default" goes to IMAGES_DIR/templates/NAME, from images/NAME/recipe.json)')
    .option('--images-dir <dir>', 'images directory (env IMAGES_DIR, default /var/lib/clarateach/images)')
    .option('--recipe <file>', 'packages and files of the guest (env IMAGE_RECIPE, default images/recipe.json)')
    .option('--force', 'rebuild every stage even when its inputs did not change')
    .action(async (o: { template?: string; imagesDir?: string; recipe?: string; force?: boolean }) => {
      await h.imageBuild(o);
      done();
    });

  program
    .command('version')
    .description('print the version')
    .action(() => {
      process.stdout.write(`${h.version}\n`);
      done();
    });

  operatorCommand(program, 'health')
    .description("the agent's health")
    .action(async (_o, command: Command) => {
      const { client: c, json } = client(command);
      await health(c, json);
      done();
    });

  operatorCommand(program, 'info')
    .description('worker, version, hypervisor and capacity')
    .action(async (_o, command: Command) => {
      printJson(await client(command).client.info());
      done();
    });

  addVmCommands(program, client, done);

  operatorCommand(program, 'token')
    .description("a learner token for a seat; prints the learner's workspace URL")
    .argument('<workshop>')
    .argument('<seat>')
    .option('--ttl <seconds>', "lifetime (default: the agent's WORKSPACE_TOKEN_TTL_S)")
    .action(async (workshop: string, seat: string, o: { ttl?: string }, command: Command) => {
      const { client: c, json } = client(command);
      await issueToken(c, json, workshop, parseSeat(seat), o.ttl === undefined ? undefined : parsePositive('--ttl', o.ttl));
      done();
    });

  operatorCommand(program, 'shell')
    .description("the seat's terminal here: Ctrl-] detaches (the shell keeps running), --session re-attaches")
    .argument('<workshop>')
    .argument('<seat>')
    .option('--session <id>', 'the session to re-attach to (printed when you detach)')
    .action(async (workshop: string, seat: string, o: { session?: string }, command: Command) => {
      done(await shell(client(command).client, workshop, parseSeat(seat), o.session));
    });

  operatorCommand(program, 'cp')
    .description('copy a file to or from a seat, streamed: clarateach cp notes.txt lab/3:/notes.txt, or lab/3:/out.log .')
    .argument('<source>')
    .argument('<target>')
    .option('--progress', 'show progress even when stderr is not a terminal')
    .action(async (source: string, target: string, o: { progress?: boolean }, command: Command) => {
      const { client: c, json } = client(command);
      const summary = await copy(c, source, target, o.progress === true || (process.stderr.isTTY === true && !json));
      if (json) printJson({ copied: summary });
      else process.stdout.write(`${summary}\n`);
      done();
    });

  return program;
}

function addVmCommands(
  program: Command,
  client: (c: Command) => { client: AgentClient; json: boolean },
  done: (code?: number) => void,
): void {
  const vm = program.command('vm').description("a worker's VMs");
  operatorCommand(vm, 'ls')
    .description('list VMs')
    .option('--workshop <id>', 'only this workshop')
    .action(async (o: { workshop?: string }, command: Command) => {
      const { client: c, json } = client(command);
      await listVms(c, json, o.workshop);
      done();
    });
  operatorCommand(vm, 'create')
    .description('create a VM for a seat')
    .argument('<workshop>')
    .argument('<seat>')
    .option('--vcpus <n>', "vCPUs (default: the agent's VM_VCPUS)")
    .option('--memory-mb <n>', "memory in MiB (default: the agent's VM_MEMORY_MB)")
    .option('--template <name>', 'template (default: default)')
    .addOption(
      new Option('--wait <until>', 'return once the VM is running or its services are ready')
        .choices(['running', 'ready'])
        .default('running'),
    )
    .action(
      async (
        workshop: string,
        seat: string,
        o: { vcpus?: string; memoryMb?: string; template?: string; wait: 'running' | 'ready' },
        command: Command,
      ) => {
        const { client: c, json } = client(command);
        const created = await c.createVm({
          workshop_id: workshop,
          seat_id: parseSeat(seat),
          wait: o.wait,
          ...(o.vcpus === undefined ? {} : { vcpus: parsePositive('--vcpus', o.vcpus) }),
          ...(o.memoryMb === undefined ? {} : { memory_mb: parsePositive('--memory-mb', o.memoryMb) }),
          ...(o.template === undefined ? {} : { template: o.template }),
        });
        await showVm(c, json, created);
        done();
      },
    );
  operatorCommand(vm, 'get')
    .description('one VM')
    .argument('<workshop>')
    .argument('<seat>')
    .action(async (workshop: string, seat: string, _o, command: Command) => {
      const { client: c, json } = client(command);
      await showVm(c, json, await c.getVm(workshop, parseSeat(seat)));
      done();
    });
  operatorCommand(vm, 'stop')
    .description("stop a VM's VMM and keep its disk (start boots it again)")
    .argument('<workshop>')
    .argument('<seat>')
    .action(async (workshop: string, seat: string, _o, command: Command) => {
      const { client: c, json } = client(command);
      await showVm(c, json, await c.stopVm(workshop, parseSeat(seat)));
      done();
    });
  operatorCommand(vm, 'start')
    .description('boot a stopped VM again from its disk')
    .argument('<workshop>')
    .argument('<seat>')
    .addOption(
      new Option('--wait <until>', 'return once the VM is running or its services are ready')
        .choices(['running', 'ready'])
        .default('running'),
    )
    .action(async (workshop: string, seat: string, o: { wait: 'running' | 'ready' }, command: Command) => {
      const { client: c, json } = client(command);
      await showVm(c, json, await c.startVm(workshop, parseSeat(seat), { wait: o.wait }));
      done();
    });
  operatorCommand(vm, 'rm')
    .description('delete a VM (its disk goes with it)')
    .argument('<workshop>')
    .argument('<seat>')
    .action(async (workshop: string, seat: string, _o, command: Command) => {
      const { client: c, json } = client(command);
      await c.deleteVm(workshop, parseSeat(seat));
      if (json) printJson({ deleted: { workshop_id: workshop, seat_id: Number(seat) } });
      else process.stdout.write(`deleted ${workshop}/${seat}\n`);
      done();
    });
  operatorCommand(vm, 'logs')
    .description("a VM's serial console")
    .argument('<workshop>')
    .argument('<seat>')
    .option('-f, --follow', 'keep printing new output until the VM is deleted or Ctrl-C')
    .action(async (workshop: string, seat: string, o: { follow?: boolean }, command: Command) => {
      const controller = new AbortController();
      process.once('SIGINT', () => controller.abort());
      await logs(client(command).client, workshop, parseSeat(seat), o.follow === true, controller.signal);
      done();
    });
}
