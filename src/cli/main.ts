// `clarateach <command>`: the agent, the guest image builder, the operator's commands (see
// operator/program.ts), and the workshop server with its commands (server-commands.ts). Exit
// codes: 0 ok, 1 the agent or server refused or failed, 2 usage, 3 not found, 4 it could not be reached.
import { CommanderError } from 'commander';
import { ConfigError, configHelp, loadConfig } from '../config/config.ts';
import { startAgent, VERSION } from './agent.ts';
import { imageBuild } from './image.ts';
import { EXIT, reportError } from './operator/output.ts';
import { buildProgram } from './operator/program.ts';
import { addServerCommands } from './server-commands.ts';
import { ServerConfigError, loadServerConfig, serverConfigHelp } from '../server-config/config.ts';
import { startServer } from './server.ts';

/** Runs until SIGTERM or SIGINT, then stops; a stop that hangs past 10 s ends the process anyway. */
async function untilSignal(stop: () => Promise<void>): Promise<number> {
  await new Promise<void>((resolve) => {
    const shutdown = (): void => {
      setTimeout(() => {
        process.stderr.write('clarateach: shutdown took over 10 s; exiting anyway\n');
        process.exit(1);
      }, 10_000).unref();
      stop().finally(resolve);
    };
    process.once('SIGTERM', shutdown);
    process.once('SIGINT', shutdown);
  });
  return EXIT.ok;
}

async function runAgent(flags: readonly string[]): Promise<number> {
  const agent = await startAgent(loadConfig(process.env, flags));
  // VMs keep running: their VMMs are detached and the next start adopts them.
  return untilSignal(() => agent.stop());
}

const agentHelp = (): string => `usage: clarateach agent [flags]

Runs the worker agent in the foreground. Each flag is also read from the environment variable beside it:
${configHelp()}
`;

async function runServer(flags: readonly string[]): Promise<number> {
  const server = await startServer(loadServerConfig(process.env, flags));
  return untilSignal(() => server.stop());
}

const serverHelp = (): string => `usage: clarateach server [flags]

Runs the workshop server in the foreground. Each flag is also read from the environment variable beside it:
${serverConfigHelp()}
`;

const program = buildProgram({ runAgent, agentHelp, imageBuild, version: VERSION }, (code) => process.exit(code));
addServerCommands(program, { runServer, serverHelp }, (code) => process.exit(code));
program.parseAsync(process.argv).catch((error: unknown) => {
  if (error instanceof CommanderError) {
    // --help and --version end here too, with code 0; commander has printed what it had to.
    process.exit(error.exitCode === 0 ? EXIT.ok : EXIT.usage);
  }
  if (error instanceof ConfigError || error instanceof ServerConfigError) {
    process.stderr.write(`clarateach: configuration error: ${error.message}\n`);
    process.exit(EXIT.usage);
  }
  process.exit(reportError(error));
});
