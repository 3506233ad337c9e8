// Entry point of the guest workspace services: `node main.mjs terminal|files`.
// Runs inside the learner's microVM as user `learner` (bundled with esbuild, node-pty external);
// also runs on the host for tests with any user and WORKSPACE_DIR.
//
// Environment:
//   PORT                       listen port (terminal 3001, files 3002)
//   HOST                       listen address (0.0.0.0)
//   WORKSPACE_DIR              workspace directory (/home/learner)
//   SHELL                      terminal: login shell, started as `$SHELL -l` (/bin/bash)
//   TERMINAL_DETACHED_TTL_S    terminal: seconds a detached shell lives (3600)
//   TERMINAL_SCROLLBACK_BYTES  terminal: replay buffer per session (524288, minimum 262144)
//   FILES_MAX_UPLOAD_BYTES     files: largest accepted upload (2147483648)
// Logs: one JSON object per line on stdout. Bad configuration: one line on stderr, exit 1.
import { ConfigError, checkShell, checkWorkspaceDir, loadFilesConfig, loadTerminalConfig } from './shared/config.ts';
import type { ServiceName } from './shared/config.ts';
import { createLogger, describeError } from './shared/log.ts';

const USAGE = 'usage: node main.mjs terminal|files';

interface Running {
  close(): Promise<void>;
}

async function start(service: ServiceName): Promise<Running> {
  const logger = createLogger(service);
  process.on('uncaughtException', (err) => {
    logger.fatal('uncaught_exception', describeError(err));
    process.exit(1);
  });
  process.on('unhandledRejection', (err) => {
    logger.fatal('unhandled_rejection', describeError(err));
    process.exit(1);
  });
  if (service === 'terminal') {
    const config = loadTerminalConfig(process.env);
    await checkWorkspaceDir(config.workspaceDir);
    await checkShell(config.shell);
    const { startTerminalServer } = await import('./terminal/server.ts');
    return startTerminalServer({ config, logger, env: process.env });
  }
  const config = loadFilesConfig(process.env);
  await checkWorkspaceDir(config.workspaceDir);
  const { startFilesServer } = await import('./files/server.ts');
  return startFilesServer({ config, logger });
}

async function main(argv: readonly string[]): Promise<void> {
  const service = argv[0];
  if (argv.length !== 1 || (service !== 'terminal' && service !== 'files')) {
    process.stderr.write(`${USAGE}\n`);
    process.exit(1);
  }
  let running: Running;
  try {
    running = await start(service);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`clarateach-guest ${service}: invalid configuration: ${err.message}\n`);
    } else {
      const code = (err as NodeJS.ErrnoException | null)?.code;
      const message = err instanceof Error ? err.message : String(err);
      // e.g. EADDRINUSE names the port, EACCES a privileged one
      const variable =
        code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND' ? ' (check PORT/HOST)' : '';
      process.stderr.write(`clarateach-guest ${service}: failed to start: ${message}${variable}\n`);
    }
    process.exit(1);
  }
  let stopping = false;
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return;
    stopping = true;
    process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), level: 'info', service, event: 'stopping', signal })}\n`);
    const force = setTimeout(() => process.exit(0), 8000);
    force.unref();
    running.close().then(
      () => process.exit(0),
      () => process.exit(1),
    );
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

void main(process.argv.slice(2));
