// Starting a VM (the launch phase): the host prepared (prepare.ts), the VMM
// spawned detached, found (directly, or through the jailer's pid file), confined to its cgroup,
// its API socket awaited, and the guest configured and started through the API.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, constants as fsConstants, openSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { describeProcess, isProcessAlive, killProcess } from '../../host/process.ts';
import { readPidFile } from '../../shared/files.ts';
import type { VmLaunchSpec, VmmProcess } from '../../vms/ports.ts';
import { FirecrackerApiClient, FirecrackerApiError, socketAnswers } from './api-client.ts';
import type { SnapshotLoadParams, Vsock } from './api-types.ts';
import { bootCalls, sendBootCall } from './boot-requests.ts';
import type { VmmCommand } from './command.ts';
import { consoleSince, describeExit, fileSize, type Exit } from './console-log.ts';
import { FirecrackerStartError, message, type DriverContext } from './options.ts';
import { prepareHost, type LaunchStage } from './prepare.ts';
import { vmmSetup, type VmmSetup } from './setup.ts';
import { removeSurroundings, surroundingsOf } from './surroundings.ts';

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

/** Where a started VMM is, for what runs once it is configured. */
export interface LaunchedVmm {
  readonly proc: VmmProcess;
  readonly client: FirecrackerApiClient;
  /** The jail's root on the host (`/` as the jailed VMM sees it); undefined without the jailer. */
  readonly chrootDir: string | undefined;
}

/** How a start differs from a plain boot (snapshot.ts: template boots and restores). */
export interface LaunchOptions {
  /** A vsock device, configured before InstanceStart. */
  readonly vsock?: Vsock;
  /** Instead of the boot requests: this one snapshot load (Firecracker accepts nothing else before it). */
  readonly load?: SnapshotLoadParams;
  /** Puts more into the jail once it is staged, before the jailer runs. */
  readonly stage?: LaunchStage;
  /** Runs once the guest runs; a rejection undoes the start like any other failure. */
  readonly ready?: (vmm: LaunchedVmm) => Promise<void>;
}

export async function startVm(ctx: DriverContext, spec: VmLaunchSpec, options: LaunchOptions = {}): Promise<VmmProcess> {
  const label = `firecracker ${spec.id}`;
  let setup: VmmSetup;
  try {
    setup = await vmmSetup(ctx, spec, true);
  } catch (error) {
    throw new FirecrackerStartError(`${label}: ${message(error)}`, undefined);
  }
  await prepareHost(ctx, spec, setup, label, options.stage);
  return new Launch(ctx, spec, setup, label, options).run();
}

/** One start from the spawn on: what has been started so far, so that a failure undoes exactly it. */
class Launch {
  private readonly socketPath: string;
  private readonly launcherName: string;
  private consoleStart = 0;
  private launcher: VmmProcess | undefined;
  private vmm: VmmProcess | undefined;
  private exit: Exit | undefined;
  private exited: Promise<Exit> = new Promise(() => undefined);

  constructor(
    private readonly ctx: DriverContext,
    private readonly spec: VmLaunchSpec,
    private readonly setup: VmmSetup,
    private readonly label: string,
    private readonly options: LaunchOptions,
  ) {
    this.socketPath = setup.command.apiSocketPath;
    this.launcherName = setup.jail ? 'the jailer' : 'firecracker';
  }

  async run(): Promise<VmmProcess> {
    this.consoleStart = await fileSize(this.spec.consoleLogPath);
    await this.spawn();
    try {
      const proc = await this.findVmm();
      this.ctx.log.info(
        { vm: this.spec.id, pid: proc.pid },
        `${this.label}: started pid ${proc.pid} (${this.setup.command.file} ${this.setup.command.args.join(' ')})`,
      );
      await this.confine(proc);
      await this.waitForSocket(proc);
      const client = await this.configure(proc);
      if (this.options.ready) {
        try {
          await this.options.ready({ proc, client, chrootDir: this.setup.jail?.chrootDir });
        } catch (error) {
          const why = await this.gone(proc);
          await this.fail(
            `${message(error)}${why ? ` (${why})` : ''}`,
            error instanceof FirecrackerApiError ? error.faultMessage : undefined,
          );
        }
      }
      this.ctx.log.info({ vm: this.spec.id }, `${this.label}: guest ${this.options.load ? 'restored' : 'started'}`);
      return proc;
    } catch (error) {
      if (error instanceof FirecrackerStartError) throw error;
      return this.fail(`unexpected error: ${message(error)}`);
    }
  }

  /** Spawns the launcher and waits until it runs; a failure to run it removes the cgroup and jail. */
  private async spawn(): Promise<void> {
    const spawnFailed = async (error: unknown): Promise<never> => {
      await removeSurroundings(this.ctx, surroundingsOf(this.setup), this.label);
      throw new FirecrackerStartError(`${this.label}: cannot run ${this.setup.command.file}: ${message(error)}`, undefined);
    };
    let child: ChildProcess;
    try {
      child = spawnDetached(this.setup.command, this.spec);
    } catch (error) {
      return spawnFailed(error);
    }
    this.exited = new Promise<Exit>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    try {
      await new Promise<void>((resolve, reject) => {
        child.once('spawn', resolve);
        child.once('error', reject);
      });
    } catch (error) {
      return spawnFailed(error);
    }
    child.on('error', () => {}); // nothing left to report once it runs
    child.unref();
    // The process spawned: firecracker itself, or the jailer (which execs firecracker in place, or
    // with --new-pid-ns forks it and exits).
    this.launcher = child.pid === undefined ? undefined : describeProcess(child.pid);
    void this.exited.then((e) => {
      this.exit = e;
    });
  }

  /** The exit, if it comes within 2 s. */
  private exitSoon(): Promise<Exit | undefined> {
    return Promise.race([this.exited, sleep(2_000).then(() => undefined)]);
  }

  /** The Firecracker process: the launcher itself, or the pid the jailer wrote with --new-pid-ns. */
  private async findVmm(): Promise<VmmProcess> {
    const pidFile = this.setup.jail?.pidFile;
    if (!pidFile) {
      if (this.launcher) return (this.vmm = this.launcher);
      // It already ended (e.g. no /dev/kvm): report how, once the exit event is in.
      const early = await this.exitSoon();
      return this.fail(
        early
          ? `${this.launcherName} ${describeExit(early)} before its API socket came up`
          : 'the process vanished right after it was started',
      );
    }
    // The jailer writes Firecracker's pid (as this namespace sees it) to <exec name>.pid in the jail, then exits.
    const deadline = Date.now() + this.ctx.socketTimeoutMs;
    for (;;) {
      const pid = await readPidFile(pidFile);
      if (pid !== undefined) {
        this.vmm = describeProcess(pid);
        if (!this.vmm) return this.fail(`firecracker (pid ${pid}) exited right after the jailer started it`);
        return this.vmm;
      }
      if (this.exit && (await readPidFile(pidFile)) === undefined) {
        return this.fail(`the jailer ${describeExit(this.exit)} without writing ${pidFile}`);
      }
      if (Date.now() >= deadline) return this.fail(`no pid in ${pidFile} after ${this.ctx.socketTimeoutMs} ms`);
      await sleep(20);
    }
  }

  /** Why the VMM is gone, or undefined while it runs. Waits briefly for the exit event so the reason names the exit code. */
  private async gone(proc: VmmProcess): Promise<string | undefined> {
    if (this.setup.jail?.pidFile) return isProcessAlive(proc) ? undefined : `firecracker (pid ${proc.pid}) exited`;
    if (!this.exit && isProcessAlive(proc)) return undefined;
    const ended = this.exit ?? (await this.exitSoon());
    return ended ? `${this.launcherName} ${describeExit(ended)}` : `${this.launcherName} (pid ${proc.pid}) exited`;
  }

  /** Without the jailer the agent moves the VMM into its cgroup itself. */
  private async confine(proc: VmmProcess): Promise<void> {
    if (this.setup.jail || !this.setup.cgroup) return;
    try {
      await this.setup.cgroup.addProcess(proc.pid);
    } catch (error) {
      // A VMM that is already gone cannot be moved: say why it went instead.
      const early = isProcessAlive(proc) ? undefined : await this.exitSoon();
      await this.fail(
        early
          ? `${this.launcherName} ${describeExit(early)} before its API socket came up`
          : `cannot put firecracker into its cgroup: ${message(error)}`,
      );
    }
  }

  /** Connect only: no request, the VMM is not configured yet. Then the limits must hold before the guest gets memory. */
  private async waitForSocket(proc: VmmProcess): Promise<void> {
    const deadline = Date.now() + this.ctx.socketTimeoutMs;
    for (;;) {
      const why = await this.gone(proc);
      if (why) await this.fail(`${why} before its API socket came up`);
      if (await socketAnswers(this.socketPath, 500)) break;
      if (Date.now() >= deadline) await this.fail(`no API socket at ${this.socketPath} after ${this.ctx.socketTimeoutMs} ms`);
      await sleep(20);
    }
    if (this.setup.cgroup && !(await this.setup.cgroup.contains(proc.pid))) {
      await this.fail(`firecracker (pid ${proc.pid}) is not in its cgroup ${this.setup.cgroup.dirs.memory}`);
    }
  }

  /**
   * The boot requests, in order, through the API (InstanceStart gets three times the timeout), or
   * the one snapshot load (the same, as it maps the memory and restores every device).
   */
  private async configure(proc: VmmProcess): Promise<FirecrackerApiClient> {
    const timeout = this.ctx.requestTimeoutMs;
    const client = new FirecrackerApiClient(this.socketPath, timeout);
    const send = async (what: () => Promise<void>): Promise<void> => {
      try {
        await what();
      } catch (error) {
        const why = await this.gone(proc);
        const faultMessage = error instanceof FirecrackerApiError ? error.faultMessage : undefined;
        await this.fail(`${message(error)}${why ? ` (${why})` : ''}`, faultMessage);
      }
    };
    const load = this.options.load;
    if (load) {
      await send(() => client.loadSnapshot(load, { timeoutMs: timeout * 3 }));
    } else {
      for (const call of bootCalls(this.setup.bootSpec, this.options.vsock)) {
        const isStart = call.operationId === 'createSyncAction';
        await send(() => sendBootCall(client, call, { timeoutMs: isStart ? timeout * 3 : timeout }));
      }
    }
    const step = load ? 'the snapshot load' : 'InstanceStart';
    if (!isProcessAlive(proc)) await this.fail(`${(await this.gone(proc)) ?? 'firecracker exited'} right after ${step}`);
    return client;
  }

  /** Undoes the start (processes, socket, cgroup, jail) and throws the reason with the console's tail. */
  private async fail(reason: string, faultMessage?: string): Promise<never> {
    // Without a live process there is nothing to kill; the cgroup is emptied by removeSurroundings.
    if (this.vmm) await killProcess(this.vmm);
    if (this.launcher) await killProcess(this.launcher);
    await rm(this.socketPath, { force: true });
    const problems = await removeSurroundings(this.ctx, surroundingsOf(this.setup), this.label);
    const tail = await consoleSince(this.spec.consoleLogPath, this.consoleStart);
    this.ctx.log.warn({ vm: this.spec.id, reason }, `${this.label}: start failed: ${reason}`);
    throw new FirecrackerStartError(
      `${this.label}: ${reason}${problems.length ? ` (cleanup: ${problems.join('; ')})` : ''}${tail ? `\n--- console ---\n${tail}` : ''}`,
      faultMessage,
    );
  }
}
