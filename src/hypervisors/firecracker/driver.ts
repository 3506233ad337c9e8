// HypervisorDriver for Firecracker (>= 1.8): one detached VMM per VM, configured through its API
// socket (docs/getting-started.md), stopped with SendCtrlAltDel (docs/api_requests/actions.md) and
// SIGKILL after a grace period. Every VMM is held to the VM's size by a cgroup of its own
// (../cgroups); with `jailerBin` it also runs through Firecracker's jailer (docs/jailer.md):
// chroot, a uid/gid of its own, the cgroup set up by the jailer itself (README.md, "Jailer").
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, constants as fsConstants, openSync } from 'node:fs';
import { mkdir, open, readFile, rm, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  createVmCgroup,
  ensureParentCgroup,
  isSettingSupported,
  listVmCgroups,
  openVmCgroup,
  resolvePlacement,
  vmCgroupSettings,
  type CgroupPlacement,
  type ResolvedPlacement,
  type VmCgroup,
  type VmLimits,
} from '../../host/cgroups/index.ts';
import type { ReclaimCounts, HypervisorDriver, HypervisorInfo, VmLaunchSpec, VmmProcess } from '../../vms/ports.ts';
import { describeProcess, isProcessAlive, killProcess, waitForExit } from '../../host/process.ts';
import { FirecrackerApiClient, FirecrackerApiError, socketAnswers } from './api-client.ts';
import { bootCalls, sendBootCall } from './boot-requests.ts';
import {
  buildVmmCommand,
  DEFAULT_CHROOT_BASE_DIR,
  firecrackerInstanceId,
  jailedInstanceId,
  MAX_SOCKET_PATH_BYTES,
  type JailerOptions,
  type VmmCommand,
} from './command.ts';
import {
  DEFAULT_JAIL_UID_BASE,
  jailedSpec,
  jailIdsForVm,
  listJailIds,
  processesOfUid,
  removeJailsOf,
  resolveExecutable,
  stageJail,
  type JailIds,
} from './jail.ts';

/** Memory (MiB) a VM's cgroup allows on top of the guest's memory: Firecracker's own needs. */
export const DEFAULT_CGROUP_OVERHEAD_MB = 64;

export interface JailSettings {
  /** `--chroot-base-dir`; default /srv/jailer. Same filesystem as IMAGES_DIR and STATE_DIR: files are hard-linked. */
  readonly chrootBaseDir?: string;
  /** First uid/gid of the per-VM range (jail.ts); default 2_000_000_000. */
  readonly uidBase?: number;
  /** `--netns`: network namespace handle the VMM joins (its TAP must be in that namespace). */
  readonly netns?: string;
  /** `--new-pid-ns`: the VMM runs as pid 1 of a pid namespace of its own. */
  readonly newPidNs?: boolean;
  /** `--resource-limit`s; the jailer's default is no-file=2048. */
  readonly resourceLimits?: JailerOptions['resourceLimits'];
}

export interface FirecrackerDriverOptions {
  /** The firecracker binary: a name looked up on PATH or an absolute path. */
  readonly firecrackerBin: string;
  readonly log?: (msg: string) => void;
  /** How long Firecracker may take to create its API socket; default 5 s. */
  readonly apiSocketTimeoutMs?: number;
  /** Timeout of each configuration request; default 10 s (InstanceStart gets 3x). */
  readonly requestTimeoutMs?: number;
  /**
   * Firecracker's `jailer` (JAILER_BIN): when set, every VMM starts through it, chrooted, as a
   * uid/gid of its own, in its cgroup. Unset: firecracker runs directly (as the agent's user).
   */
  readonly jailerBin?: string;
  readonly jail?: JailSettings;
  /**
   * Where the VMs' cgroups go: default the detected hierarchy (v1 or v2), `clarateach/<id>` from
   * its root. `false` turns the CPU and memory limits off (not recommended).
   */
  readonly cgroup?: CgroupPlacement | false;
  /** MiB on top of the guest's memory the cgroup allows the VMM; default 64. */
  readonly cgroupOverheadMb?: number;
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

/** How one VM's VMM runs: the command, the spec as the VMM sees it, its cgroup and its jail. */
interface VmPlan {
  readonly command: VmmCommand;
  /** The launch spec with the paths the VMM sees (jail-relative with the jailer). */
  readonly bootSpec: VmLaunchSpec;
  readonly limits: VmLimits;
  readonly placement?: ResolvedPlacement;
  /** The VM's cgroup (it need not exist yet); absent with cgroups off. */
  readonly cgroup?: VmCgroup;
  readonly jail?: { readonly ids: JailIds; readonly chrootBaseDir: string; readonly chrootDir: string; readonly pidFile?: string };
}

/** The pid the jailer recorded with --new-pid-ns; undefined while the file is not (fully) there. */
async function readPidFile(path: string): Promise<number | undefined> {
  try {
    const text = (await readFile(path, 'utf8')).trim();
    return /^\d+$/.test(text) && Number(text) > 0 ? Number(text) : undefined;
  } catch {
    return undefined;
  }
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export function createFirecrackerDriver(opts: FirecrackerDriverOptions): HypervisorDriver {
  const info: HypervisorInfo = { name: 'firecracker', acceleration: 'kvm' };
  const log = opts.log ?? (() => {});
  const socketTimeoutMs = opts.apiSocketTimeoutMs ?? 5_000;
  const requestTimeoutMs = opts.requestTimeoutMs ?? 10_000;
  const jail = opts.jail ?? {};
  const overheadMb = opts.cgroupOverheadMb ?? DEFAULT_CGROUP_OVERHEAD_MB;
  let resolvedPlacement: ResolvedPlacement | undefined;

  /** Where VM cgroups go (detected once); `prepare` (start) also creates the parent cgroup. */
  async function placement(prepare: boolean): Promise<ResolvedPlacement | undefined> {
    if (opts.cgroup === false) return undefined;
    resolvedPlacement ??= await resolvePlacement(opts.cgroup ?? {});
    return prepare ? ensureParentCgroup(resolvedPlacement) : resolvedPlacement;
  }

  async function plan(spec: VmLaunchSpec, prepare: boolean): Promise<VmPlan> {
    const limits: VmLimits = { vcpus: spec.vcpus, memoryMb: spec.memoryMb, overheadMb };
    const cg = await placement(prepare);
    if (!opts.jailerBin) {
      const command = buildVmmCommand({ firecrackerBin: opts.firecrackerBin, vmId: spec.id, runDir: spec.runDir });
      const cgroup = cg ? await openVmCgroup(command.instanceId, cg) : undefined;
      return { command, bootSpec: spec, limits, ...(cg && cgroup ? { placement: cg, cgroup } : {}) };
    }
    if (cg?.relativeTo === 'self')
      throw new Error('with the jailer, VM cgroups are placed from the hierarchy root (cgroup.relativeTo "root")');
    // The jailer names the jail after the real file, symlinks resolved.
    const execFile = await resolveExecutable(opts.firecrackerBin, true);
    const jailerBin = await resolveExecutable(opts.jailerBin, false);
    const ids = jailIdsForVm(spec.mac, jail.uidBase ?? DEFAULT_JAIL_UID_BASE);
    const cgroups: Record<string, string> = {};
    if (cg) {
      for (const setting of vmCgroupSettings(cg.layout.version, limits)) {
        if (await isSettingSupported(cg, setting)) cgroups[setting.file] = setting.value;
      }
    }
    const jailer: JailerOptions = {
      jailerBin,
      uid: ids.uid,
      gid: ids.gid,
      chrootBaseDir: jail.chrootBaseDir ?? DEFAULT_CHROOT_BASE_DIR,
      ...(cg ? { cgroupVersion: cg.layout.version, parentCgroup: cg.parent, cgroups } : {}),
      ...(jail.netns !== undefined ? { netns: jail.netns } : {}),
      ...(jail.resourceLimits ? { resourceLimits: jail.resourceLimits } : {}),
      ...(jail.newPidNs ? { newPidNs: true } : {}),
    };
    const command = buildVmmCommand({ firecrackerBin: execFile, vmId: spec.id, runDir: spec.runDir, jailer });
    if (!command.jail) throw new Error('internal: a jailer command without a jail layout');
    const { chrootBaseDir, chrootDir, pidFile } = command.jail;
    const cgroup = cg ? await openVmCgroup(command.instanceId, cg) : undefined;
    return {
      command,
      bootSpec: jailedSpec(spec),
      limits,
      ...(cg && cgroup ? { placement: cg, cgroup } : {}),
      jail: { ids, chrootBaseDir, chrootDir, ...(pidFile ? { pidFile } : {}) },
    };
  }

  /** Ends every process in the VM's cgroup: only this VM's VMM (or its jailer) can be in it. */
  async function killCgroupMembers(cgroup: VmCgroup | undefined, label: string): Promise<void> {
    if (!cgroup) return;
    for (const pid of await cgroup.pids()) {
      const proc = pid === process.pid ? undefined : describeProcess(pid);
      if (!proc) continue;
      log(`${label}: killing pid ${pid}, left in the VM's cgroup`);
      await killProcess(proc);
    }
  }

  /** Removes what surrounds a VMM that is gone: its jail and its cgroup. Returns what failed. */
  async function cleanup(p: VmPlan, label: string): Promise<string[]> {
    return removeSurroundings({ instanceId: p.command.instanceId, cgroup: p.cgroup, chrootBaseDir: p.jail?.chrootBaseDir }, label);
  }

  /** Kills what is left in the cgroup of instance `instanceId`, removes its jails and its cgroup. */
  async function removeSurroundings(
    what: { readonly instanceId: string; readonly cgroup: VmCgroup | undefined; readonly chrootBaseDir: string | undefined },
    label: string,
  ): Promise<string[]> {
    const problems: string[] = [];
    try {
      await killCgroupMembers(what.cgroup, label);
    } catch (error) {
      problems.push(`cgroup processes: ${message(error)}`);
    }
    if (what.chrootBaseDir !== undefined) {
      try {
        await removeJailsOf(what.chrootBaseDir, what.instanceId);
      } catch (error) {
        problems.push(`jail: ${message(error)}`);
      }
    }
    if (what.cgroup) {
      try {
        await what.cgroup.remove();
      } catch (error) {
        problems.push(`cgroup: ${message(error)}`);
      }
    }
    return problems;
  }

  async function start(spec: VmLaunchSpec): Promise<VmmProcess> {
    const label = `firecracker ${spec.id}`;
    let p: VmPlan;
    try {
      p = await plan(spec, true);
    } catch (error) {
      throw new FirecrackerStartError(`${label}: ${message(error)}`, undefined);
    }
    const { command } = p;
    const socketPath = command.apiSocketPath;
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

    try {
      // Anything still in this VM's cgroup is left from an earlier run of it (a VMM that no longer
      // answers, a jailer that crashed).
      await killCgroupMembers(p.cgroup, label);
      if (p.jail) {
        const { ids } = p.jail;
        const users = await processesOfUid(ids.uid);
        if (users.length > 0) {
          throw new Error(
            `uid ${ids.uid} of this VM's jail is in use by pid ${users.join(', ')}` +
              ' (a leftover VMM, or another VM whose address has the same low 16 bits)',
          );
        }
        await removeJailsOf(p.jail.chrootBaseDir, command.instanceId);
        const staged = await stageJail({ chrootBaseDir: p.jail.chrootBaseDir, chrootDir: p.jail.chrootDir, spec, ids });
        log(`${label}: jail ${p.jail.chrootDir} (uid/gid ${ids.uid}), files ${JSON.stringify(staged)}`);
      } else if (p.cgroup && p.placement) {
        await createVmCgroup({ name: p.cgroup.name, ...p.limits }, p.placement);
      }
    } catch (error) {
      const problems = await cleanup(p, label);
      throw new FirecrackerStartError(
        `${label}: ${message(error)}${problems.length ? ` (cleanup: ${problems.join('; ')})` : ''}`,
        undefined,
      );
    }

    const launcherName = p.jail ? 'the jailer' : 'firecracker';
    const consoleStart = await fileSize(spec.consoleLogPath);
    let child: ChildProcess;
    const spawnFailed = async (error: unknown): Promise<never> => {
      await cleanup(p, label);
      throw new FirecrackerStartError(`${label}: cannot run ${command.file}: ${message(error)}`, undefined);
    };
    try {
      child = spawnDetached(command, spec);
    } catch (error) {
      return spawnFailed(error);
    }
    const exited = new Promise<Exit>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
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
    const launcher = child.pid === undefined ? undefined : describeProcess(child.pid);

    let exit: Exit | undefined;
    void exited.then((e) => {
      exit = e;
    });
    let vmm: VmmProcess | undefined;

    const fail = async (reason: string, faultMessage?: string): Promise<never> => {
      // Without a live process there is nothing to kill; the cgroup is emptied by cleanup().
      if (vmm) await killProcess(vmm);
      if (launcher) await killProcess(launcher);
      await rm(socketPath, { force: true });
      const problems = await cleanup(p, label);
      const tail = await consoleTail(spec.consoleLogPath, consoleStart);
      log(`${label}: start failed: ${reason}`);
      throw new FirecrackerStartError(
        `${label}: ${reason}${problems.length ? ` (cleanup: ${problems.join('; ')})` : ''}${tail ? `\n--- console ---\n${tail}` : ''}`,
        faultMessage,
      );
    };

    try {
      const pidFile = p.jail?.pidFile;
      const deadline = Date.now() + socketTimeoutMs;
      if (pidFile) {
        // --new-pid-ns: the jailer writes Firecracker's pid (as this namespace sees it) to
        // <exec name>.pid in the jail, then exits.
        for (;;) {
          const pid = await readPidFile(pidFile);
          if (pid !== undefined) {
            vmm = describeProcess(pid);
            if (!vmm) return await fail(`firecracker (pid ${pid}) exited right after the jailer started it`);
            break;
          }
          if (exit && (await readPidFile(pidFile)) === undefined) {
            return await fail(`the jailer ${describeExit(exit)} without writing ${pidFile}`);
          }
          if (Date.now() >= deadline) return await fail(`no pid in ${pidFile} after ${socketTimeoutMs} ms`);
          await sleep(20);
        }
      } else if (launcher) {
        vmm = launcher;
      } else {
        // It already ended (e.g. no /dev/kvm): report how, once the exit event is in.
        const early = await Promise.race([exited, sleep(2_000).then(() => undefined)]);
        return await fail(
          early
            ? `${launcherName} ${describeExit(early)} before its API socket came up`
            : 'the process vanished right after it was started',
        );
      }
      const proc = vmm;
      log(`${label}: started pid ${proc.pid} (${command.file} ${command.args.join(' ')})`);

      // The launcher's exit event can trail /proc by a moment: once the process is gone, wait
      // briefly for it so the reason names the exit code rather than a bare "exited".
      const gone = async (): Promise<string | undefined> => {
        if (pidFile) return isProcessAlive(proc) ? undefined : `firecracker (pid ${proc.pid}) exited`;
        if (!exit && isProcessAlive(proc)) return undefined;
        const ended = exit ?? (await Promise.race([exited, sleep(2_000).then(() => undefined)]));
        return ended ? `${launcherName} ${describeExit(ended)}` : `${launcherName} (pid ${proc.pid}) exited`;
      };

      if (!p.jail && p.cgroup) {
        try {
          await p.cgroup.addProcess(proc.pid);
        } catch (error) {
          // A VMM that is already gone cannot be moved: say why it went instead.
          const early = isProcessAlive(proc) ? undefined : await Promise.race([exited, sleep(2_000).then(() => undefined)]);
          return await fail(
            early
              ? `${launcherName} ${describeExit(early)} before its API socket came up`
              : `cannot put firecracker into its cgroup: ${message(error)}`,
          );
        }
      }

      // Wait for the API socket (connect only: no request, the VMM is not configured yet).
      for (;;) {
        const why = await gone();
        if (why) return await fail(`${why} before its API socket came up`);
        if (await socketAnswers(socketPath, 500)) break;
        if (Date.now() >= deadline) return await fail(`no API socket at ${socketPath} after ${socketTimeoutMs} ms`);
        await sleep(20);
      }
      // Before the guest gets any memory: the limits must hold for it.
      if (p.cgroup && !(await p.cgroup.contains(proc.pid))) {
        return await fail(`firecracker (pid ${proc.pid}) is not in its cgroup ${p.cgroup.dirs.memory}`);
      }

      const client = new FirecrackerApiClient(socketPath, requestTimeoutMs);
      for (const call of bootCalls(p.bootSpec)) {
        const isStart = call.operationId === 'createSyncAction';
        try {
          await sendBootCall(client, call, { timeoutMs: isStart ? requestTimeoutMs * 3 : requestTimeoutMs });
        } catch (error) {
          const why = await gone();
          const faultMessage = error instanceof FirecrackerApiError ? error.faultMessage : undefined;
          return await fail(`${message(error)}${why ? ` (${why})` : ''}`, faultMessage);
        }
      }
      if (!isProcessAlive(proc)) return await fail(`${(await gone()) ?? 'firecracker exited'} right after InstanceStart`);
      log(`${label}: guest started`);
      return proc;
    } catch (error) {
      if (error instanceof FirecrackerStartError) throw error;
      return fail(`unexpected error: ${message(error)}`);
    }
  }

  async function stop(spec: VmLaunchSpec, proc: VmmProcess, gracefulMs: number): Promise<void> {
    const label = `firecracker ${spec.id}`;
    let p: VmPlan | undefined;
    try {
      p = await plan(spec, false);
    } catch (error) {
      log(`${label}: cannot work out its socket, jail and cgroup (${message(error)}): stopping pid ${proc.pid} only`);
    }
    const socketPath = p?.command.apiSocketPath;
    if (isProcessAlive(proc)) {
      const deadline = Date.now() + Math.max(0, gracefulMs);
      let gone = false;
      if (socketPath && gracefulMs > 0 && (await socketAnswers(socketPath, Math.min(1_000, gracefulMs)))) {
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
          log(`${label}: no graceful shutdown: ${message(error)}`);
        }
      }
      if (!gone && isProcessAlive(proc)) {
        log(`${label}: killing pid ${proc.pid}`);
        await killProcess(proc);
        if (isProcessAlive(proc)) throw new Error(`${label}: pid ${proc.pid} survived SIGKILL`);
      }
    }
    // Only a socket whose VMM is gone: never pull the socket from under a live process.
    if (isProcessAlive(proc)) return;
    if (socketPath) await rm(socketPath, { force: true });
    if (p) {
      const problems = await cleanup(p, label);
      if (problems.length > 0) throw new Error(`${label}: the VMM is gone, but ${problems.join('; ')}`);
    }
  }

  /**
   * Reconcile: every cgroup and jail whose instance no kept VM has is an orphan. A jailed VMM
   * whose pid never got recorded (the agent died mid-start) cannot be found by its command line,
   * whose paths are jail-relative; it is found in its cgroup, which holds nothing else.
   */
  async function reclaim(keep: ReadonlySet<string>): Promise<ReclaimCounts> {
    const removed = { cgroups: 0, jails: 0 };
    const chrootBaseDir = opts.jailerBin ? (jail.chrootBaseDir ?? DEFAULT_CHROOT_BASE_DIR) : undefined;
    let kept: Set<string>;
    try {
      const execName = opts.jailerBin ? basename(await resolveExecutable(opts.firecrackerBin, true)) : undefined;
      kept = new Set(
        [...keep].map((id) =>
          chrootBaseDir !== undefined && execName !== undefined ? jailedInstanceId(id, chrootBaseDir, execName) : firecrackerInstanceId(id),
        ),
      );
    } catch (error) {
      // Without the binary the kept VMs' ids are unknown: removing anything could hit a live VM.
      log(`firecracker: orphan cleanup skipped: ${message(error)}`);
      return removed;
    }
    let cg: ResolvedPlacement | undefined;
    try {
      cg = await placement(false);
    } catch (error) {
      log(`firecracker: orphan cgroups not looked for: ${message(error)}`);
    }
    const found = new Set([
      ...(cg ? await listVmCgroups(cg) : []),
      ...(chrootBaseDir !== undefined ? await listJailIds(chrootBaseDir) : []),
    ]);
    for (const instanceId of [...found].sort()) {
      if (kept.has(instanceId)) continue;
      const label = `firecracker ${instanceId}`;
      let cgroup: VmCgroup | undefined;
      try {
        cgroup = cg ? await openVmCgroup(instanceId, cg) : undefined;
      } catch (error) {
        // A directory under the parent cgroup that no VM id could name is not ours to remove.
        log(`${label}: left alone: ${message(error)}`);
        continue;
      }
      const problems = await removeSurroundings({ instanceId, cgroup, chrootBaseDir }, label);
      if (problems.length === 0) {
        if (cgroup) removed.cgroups++;
        if (chrootBaseDir !== undefined) removed.jails++;
      }
      log(
        problems.length === 0
          ? `${label}: removed the cgroup, jail and processes that no VM owns`
          : `${label}: leftovers no VM owns were not all removed: ${problems.join('; ')}`,
      );
    }
    return removed;
  }

  return {
    info,
    start,
    isAlive: (proc) => isProcessAlive(proc),
    stop,
    reclaim,
    // Jailed VMMs run as the VM's own uid/gid: its TAP is given to them.
    vmmOwner: async (spec) => (opts.jailerBin ? jailIdsForVm(spec.mac, opts.jail?.uidBase ?? DEFAULT_JAIL_UID_BASE) : undefined),
  };
}
