// HypervisorDriver for Firecracker (>= 1.8): one detached `firecracker` process per VM, configured
// through its API socket (docs/getting-started.md), stopped with SendCtrlAltDel
// (docs/api_requests/actions.md) and SIGKILL after a grace period.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, constants as fsConstants, openSync } from 'node:fs';
import { mkdir, open, rm, stat } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { HypervisorDriver, HypervisorInfo, VmLaunchSpec, VmmProcess } from '../driver.ts';
import { describeProcess, isProcessAlive, killProcess, waitForExit } from '../process.ts';
import { FirecrackerApiClient, FirecrackerApiError, socketAnswers } from './api-client.ts';
import { bootCalls, sendBootCall } from './boot-requests.ts';
import { buildVmmCommand, type VmmCommand } from './command.ts';

export interface FirecrackerDriverOptions {
  /** The firecracker binary: a name looked up on PATH or an absolute path. */
  readonly firecrackerBin: string;
  readonly log?: (msg: string) => void;
  /** How long Firecracker may take to create its API socket; default 5 s. */
  readonly apiSocketTimeoutMs?: number;
  /** Timeout of each configuration request; default 10 s (InstanceStart gets 3x). */
  readonly requestTimeoutMs?: number;
}

/** start() failed; nothing is left running. `faultMessage` is Firecracker's own reason, if any. */
export class FirecrackerStartError extends Error {
  constructor(
    message: string,
    readonly faultMessage: string | undefined,
  ) {
    super(message);
    this.name = 'FirecrackerStartError';
  }
}

const CONSOLE_TAIL_BYTES = 2_000;
/** sun_path holds 108 bytes including the terminating NUL. */
const MAX_SOCKET_PATH_BYTES = 107;

async function fileSize(path: string): Promise<number> {
  try {
    return (await stat(path)).size;
  } catch {
    return 0;
  }
}

/** What this run of the VMM wrote to the console log (its stderr lands there too), trimmed. */
async function consoleTail(path: string, from: number): Promise<string> {
  try {
    const handle = await open(path, 'r');
    try {
      const size = (await handle.stat()).size;
      const start = Math.max(from, size - CONSOLE_TAIL_BYTES);
      if (size <= start) return '';
      const buffer = Buffer.alloc(size - start);
      await handle.read(buffer, 0, buffer.length, start);
      return buffer.toString('utf8').trim();
    } finally {
      await handle.close();
    }
  } catch {
    return '';
  }
}

interface Exit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

function describeExit(exit: Exit): string {
  return exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
}

/** Starts the VMM in its own session with stdout and stderr appended to the console log. */
function spawnDetached(command: VmmCommand, spec: VmLaunchSpec): ChildProcess {
  // O_APPEND: the guest console (Firecracker's stdout) and Firecracker's stderr go to the log.
  const out = openSync(spec.consoleLogPath, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_APPEND, 0o640);
  try {
    return spawn(command.file, [...command.args], {
      cwd: spec.runDir,
      detached: true, // setsid(): not in the agent's session or process group, survives a kill -9
      stdio: ['ignore', out, out],
    });
  } finally {
    closeSync(out); // the child holds its own copy
  }
}

/**
 * The last line Linux prints once it has halted or powered off. Firecracker (x86_64) only exits
 * when the guest resets (docs/FAQ: `poweroff`/`halt` leave the process running), so a guest
 * whose init powers off on Ctrl-Alt-Del ends here, and there is no point waiting any longer.
 */
const GUEST_HALTED = /reboot: (System halted|Power down)/;

/** Waits for the VMM to exit, or for the guest to report on the console that it halted. */
async function waitForShutdown(
  proc: VmmProcess,
  consoleLogPath: string,
  consoleStart: number,
  deadline: number,
): Promise<'exited' | 'halted' | 'timeout'> {
  for (;;) {
    if (!isProcessAlive(proc)) return 'exited';
    if (GUEST_HALTED.test(await consoleTail(consoleLogPath, consoleStart))) {
      // Give Firecracker a moment in case it is exiting on its own anyway.
      return (await waitForExit(proc, 200)) ? 'exited' : 'halted';
    }
    if (Date.now() >= deadline) return 'timeout';
    await sleep(Math.min(50, Math.max(0, deadline - Date.now())));
  }
}

export function createFirecrackerDriver(opts: FirecrackerDriverOptions): HypervisorDriver {
  const info: HypervisorInfo = { name: 'firecracker', acceleration: 'kvm' };
  const log = opts.log ?? (() => {});
  const socketTimeoutMs = opts.apiSocketTimeoutMs ?? 5_000;
  const requestTimeoutMs = opts.requestTimeoutMs ?? 10_000;

  const commandFor = (spec: VmLaunchSpec): VmmCommand =>
    buildVmmCommand({ firecrackerBin: opts.firecrackerBin, vmId: spec.id, runDir: spec.runDir });

  async function start(spec: VmLaunchSpec): Promise<VmmProcess> {
    const command = commandFor(spec);
    const socketPath = command.apiSocketPath;
    const label = `firecracker ${spec.id}`;
    if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH_BYTES) {
      throw new FirecrackerStartError(`${label}: API socket path too long for a unix socket: ${socketPath}`, undefined);
    }
    await mkdir(spec.runDir, { recursive: true });

    // A socket left by a VMM that died is stale: Firecracker refuses to bind over it. A socket that
    // still answers belongs to a live VMM, which must be stopped first, not orphaned.
    if (await socketAnswers(socketPath)) {
      throw new FirecrackerStartError(`${label}: a VMM already answers on ${socketPath}; stop it first`, undefined);
    }
    await rm(socketPath, { force: true });

    const consoleStart = await fileSize(spec.consoleLogPath);
    let child: ChildProcess;
    try {
      child = spawnDetached(command, spec);
    } catch (error) {
      throw new FirecrackerStartError(`${label}: cannot run ${command.file}: ${(error as Error).message}`, undefined);
    }
    const exited = new Promise<Exit>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    try {
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', resolve);
        child.once('error', reject);
      });
    } catch (error) {
      throw new FirecrackerStartError(`${label}: cannot run ${command.file}: ${(error as Error).message}`, undefined);
    }
    child.on('error', () => {}); // nothing left to report once it runs
    child.unref();
    const pid = child.pid;
    const proc = pid === undefined ? undefined : describeProcess(pid);

    let exit: Exit | undefined;
    void exited.then((e) => {
      exit = e;
    });

    const fail = async (reason: string, faultMessage?: string): Promise<never> => {
      // Without `proc` the process was already gone (or a zombie): nothing to kill.
      if (proc) await killProcess(proc);
      await rm(socketPath, { force: true });
      const tail = await consoleTail(spec.consoleLogPath, consoleStart);
      log(`${label}: start failed: ${reason}`);
      throw new FirecrackerStartError(`${label}: ${reason}${tail ? `\n--- console ---\n${tail}` : ''}`, faultMessage);
    };

    if (!proc) {
      // It already ended (e.g. no /dev/kvm): report how, once the exit event is in.
      const early = await Promise.race([exited, sleep(2_000).then(() => undefined)]);
      return fail(early ? `firecracker ${describeExit(early)} before its API socket came up` : 'the process vanished right after it was started');
    }
    log(`${label}: started pid ${proc.pid} (${command.file} ${command.args.join(' ')})`);

    try {
      // Wait for the API socket (connect only: no request, the VMM is not configured yet).
      const deadline = Date.now() + socketTimeoutMs;
      for (;;) {
        if (exit) return await fail(`firecracker ${describeExit(exit)} before its API socket came up`);
        if (await socketAnswers(socketPath, 500)) break;
        if (Date.now() >= deadline) return await fail(`no API socket at ${socketPath} after ${socketTimeoutMs} ms`);
        await sleep(20);
      }

      const client = new FirecrackerApiClient(socketPath, requestTimeoutMs);
      for (const call of bootCalls(spec)) {
        const isStart = call.operationId === 'createSyncAction';
        try {
          await sendBootCall(client, call, { timeoutMs: isStart ? requestTimeoutMs * 3 : requestTimeoutMs });
        } catch (error) {
          const gone = exit ? ` (firecracker ${describeExit(exit)})` : '';
          const faultMessage = error instanceof FirecrackerApiError ? error.faultMessage : undefined;
          return await fail(`${(error as Error).message}${gone}`, faultMessage);
        }
      }
      if (!isProcessAlive(proc)) return await fail(`firecracker ${exit ? describeExit(exit) : 'exited'} right after InstanceStart`);
    } catch (error) {
      if (error instanceof FirecrackerStartError) throw error;
      return fail(`unexpected error: ${(error as Error).message}`);
    }
    log(`${label}: guest started`);
    return proc;
  }

  async function stop(spec: VmLaunchSpec, proc: VmmProcess, gracefulMs: number): Promise<void> {
    const socketPath = commandFor(spec).apiSocketPath;
    const label = `firecracker ${spec.id}`;
    if (isProcessAlive(proc)) {
      const deadline = Date.now() + Math.max(0, gracefulMs);
      let gone = false;
      if (gracefulMs > 0 && (await socketAnswers(socketPath, Math.min(1_000, gracefulMs)))) {
        const consoleStart = await fileSize(spec.consoleLogPath);
        try {
          // The guest's init shuts down on Ctrl-Alt-Del; with reboot=k the reset ends Firecracker.
          const client = new FirecrackerApiClient(socketPath);
          await client.createSyncAction(
            { action_type: 'SendCtrlAltDel' },
            { timeoutMs: Math.max(100, Math.min(2_000, deadline - Date.now())) },
          );
          log(`${label}: sent Ctrl-Alt-Del, waiting up to ${gracefulMs} ms`);
          const outcome = await waitForShutdown(proc, spec.consoleLogPath, consoleStart, deadline);
          gone = outcome === 'exited';
          if (outcome === 'halted') log(`${label}: the guest halted instead of rebooting`);
        } catch (error) {
          log(`${label}: no graceful shutdown: ${(error as Error).message}`);
        }
      }
      if (!gone && isProcessAlive(proc)) {
        log(`${label}: killing pid ${proc.pid}`);
        await killProcess(proc);
        if (isProcessAlive(proc)) throw new Error(`${label}: pid ${proc.pid} survived SIGKILL`);
      }
    }
    // Only a socket whose VMM is gone: never pull the socket from under a live process.
    if (!isProcessAlive(proc)) await rm(socketPath, { force: true });
  }

  return {
    info,
    start,
    isAlive: (proc) => isProcessAlive(proc),
    stop,
  };
}
