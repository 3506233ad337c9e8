// `clarateach <command>`: the agent and the guest image builder.
import { ConfigError, configHelp, loadConfig } from '../config/config.ts';
import { startAgent, VERSION } from './agent.ts';
import { imageCommand } from './image.ts';

const USAGE = `usage: clarateach <command>

commands:
  agent [flags]          run the worker agent in the foreground (REST API on PORT, default 9090)
  image build [--force]  build the guest kernel, initrd and rootfs into IMAGES_DIR
  version                print the version

agent flags (each also read from the environment variable beside it):
${configHelp()}
`;

async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'agent': {
      if (rest.includes('--help') || rest.includes('-h')) {
        process.stdout.write(USAGE);
        return 0;
      }
      const agent = await startAgent(loadConfig(process.env, rest));
      await new Promise<void>((resolve) => {
        const shutdown = (): void => {
          // VMs keep running: their VMMs are detached and the next start adopts them.
          setTimeout(() => {
            process.stderr.write('clarateach: shutdown took over 10 s; exiting anyway\n');
            process.exit(1);
          }, 10_000).unref();
          agent.stop().finally(resolve);
        };
        process.once('SIGTERM', shutdown);
        process.once('SIGINT', shutdown);
      });
      return 0;
    }
    case 'image':
      return imageCommand(rest);
    case 'version':
    case '--version':
      process.stdout.write(`${VERSION}\n`);
      return 0;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`clarateach: unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (error instanceof ConfigError) {
      process.stderr.write(`clarateach: configuration error: ${error.message}\n`);
      process.exit(2);
    }
    process.stderr.write(`clarateach: ${error instanceof Error ? error.message : String(error)}\n`);
    process.exit(1);
  },
);
