// QEMU adapter: one `qemu-system-x86_64 -M microvm` per VM, daemonized so that it outlives the
// agent (it is re-parented away from the agent and has its own session), controlled over QMP on a
// unix socket in the VM's run directory. Graceful stop is ctrl-alt-del through an emulated i8042,
// which the guest kernel turns into SIGINT for its init (the same path as Firecracker's
// SendCtrlAltDel); the guest init then powers off and QEMU exits.
import { spawn } from 'node:child_process';
import { access, mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { run } from '../../shared/exec.ts';
import type { ReclaimCounts, HypervisorDriver, HypervisorInfo, VmLaunchSpec, VmmProcess } from '../../vms/ports.ts';
import { describeProcess, isProcessAlive, killProcess, waitForExit } from '../../host/process.ts';
import { detectAcceleration, hostTscKhz, type AccelVerdict } from './accel.ts';
import { buildQemuArgs, MAX_SOCKET_PATH, pidFilePath, qemuOverheadMb, qmpSocketPath, type Acceleration } from './args.ts';
import { QmpClient } from './qmp.ts';
import { ensureVmUser, vmUserName } from '../../host/vm-users.ts';
import { listVmCgroups, placeInCgroup, removeVmCgroup, type PlacementInput } from '../../host/cgroups/index.ts';

export { buildQemuArgs, kernelCommandLine } from './args.ts';
export type { AccelVerdict } from './accel.ts';

export interface QemuDriverOptions {
  /** Default `qemu-system-x86_64` from PATH. */
  readonly qemuBin?: string;
  /** Holds `vmlinux`, the kernel used for the KVM trial boot. */
  readonly imagesDir: string;
  /** Where the acceleration verdict is cached. */
  readonly stateDir: string;
  readonly log?: (msg: string) => void;
  /** `auto` (default) tries KVM; `kvm`/`tcg` force one (tests, operators who know). */
  readonly accel?: 'auto' | Acceleration;
  /** Budget of the KVM trial boot (default 15 s). */
  readonly kvmTrialTimeoutMs?: number;
  /** How long start() waits for QEMU to come up and QMP to report `running` (default 30 s). */
  readonly startTimeoutMs?: number;
  /**
   * Command prefix QEMU is started through, e.g. `['ip', 'netns', 'exec', 'ns1']` (tests put the
   * VM's TAP in a private network namespace). It must exec QEMU, not fork it.
   */
  readonly launchPrefix?: readonly string[];
  /**
   * Run each VM's QEMU as its own unprivileged user (`ctvm-<tap>`) under a seccomp sandbox.
   * Default: when the agent runs as root.
   */
  readonly perVmUser?: boolean;
  /**
   * Where each VM's QEMU gets its cgroup (CPU = vcpus, memory = memory_mb + overhead); `false`:
   * no limits. QEMU starts paused and is resumed only once it sits in its cgroup.
   */
  readonly cgroup?: PlacementInput | false;
  /** Memory QEMU itself may use beyond the guest's (default: qemuOverheadMb of the accelerator). */
  readonly cgroupOverheadMb?: number;
}

export class QemuStartError extends Error {
  constructor(vmId: string, reason: string) {
    super(`qemu could not start VM ${vmId}: ${reason}`);
    this.name = 'QemuStartError';
  }
}

const TAP_NAME = /^[A-Za-z0-9_.-]{1,15}$/;
const MAC = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;

function checkSpec(spec: VmLaunchSpec): string | undefined {
  for (const [name, value] of Object.entries({
    kernelPath: spec.kernelPath,
    initrdPath: spec.initrdPath,
    baseDiskPath: spec.baseDiskPath,
    layerDiskPath: spec.layerDiskPath,
    runDir: spec.runDir,
    consoleLogPath: spec.consoleLogPath,
  })) {
    if (!value.startsWith('/')) return `${name} must be an absolute path, got "${value}"`;
  }
  if (spec.tapName !== '' && !TAP_NAME.test(spec.tapName)) return `invalid TAP name "${spec.tapName}"`;
  if (!MAC.test(spec.mac) && spec.tapName !== '') return `invalid MAC address "${spec.mac}"`;
  if (!Number.isInteger(spec.vcpus) || spec.vcpus < 1) return `invalid vcpus ${spec.vcpus}`;
  if (!Number.isInteger(spec.memoryMb) || spec.memoryMb < 64) return `invalid memoryMb ${spec.memoryMb}`;
  if (qmpSocketPath(spec.runDir).length > MAX_SOCKET_PATH) {
    return `runDir ${spec.runDir} is too long for a unix socket path (${MAX_SOCKET_PATH} bytes at most)`;
  }
  return undefined;
}

interface LaunchResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stderr: string;
}

/** Runs the daemonizing QEMU launcher: it exits 0 once the VM runs, or non-zero with a reason. */
function runLauncher(file: string, args: readonly string[], timeoutMs: number): Promise<LaunchResult> {
  return new Promise((resolve) => {
    const child = spawn(file, args, { detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    let done = false;
    const finish = (result: LaunchResult): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve(result);
    };
    const timer = setTimeout(() => {
      if (child.pid !== undefined) {
        try {
          process.kill(child.pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
      finish({ code: null, signal: 'SIGKILL', stderr: `${stderr}\n(no answer within ${timeoutMs} ms)` });
    }, timeoutMs);
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-16_384);
    });
    child.on('error', (error) => finish({ code: null, signal: null, stderr: `cannot run ${file}: ${error.message}` }));
    child.on('close', (code, signal) => finish({ code, signal, stderr }));
  });
}

/** QEMU's message lines without the `-msg timestamp=on` prefix. */
function cleanStderr(stderr: string): string {
  return stderr
    .split('\n')
    .map((l) => l.replace(/^\d{4}-\d\d-\d\dT[\d:.]+Z /, '').trim())
    .filter((l) => l !== '')
    .join('; ');
}

async function readPid(path: string): Promise<number | undefined> {
  try {
    const pid = Number((await readFile(path, 'utf8')).trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

export class QemuDriver implements HypervisorDriver {
  readonly info: HypervisorInfo;
  private readonly qemuBin: string;
  private readonly log: (msg: string) => void;
  private readonly startTimeoutMs: number;
  private readonly launchPrefix: readonly string[];
  private readonly perVmUser: boolean;
  private readonly cgroup: PlacementInput | false;
  private readonly cgroupOverheadMb: number;

  constructor(
    readonly verdict: AccelVerdict,
    opts: QemuDriverOptions,
  ) {
    this.info = { name: 'qemu', acceleration: verdict.accel };
    this.qemuBin = opts.qemuBin ?? 'qemu-system-x86_64';
    this.log = opts.log ?? (() => {});
    this.startTimeoutMs = opts.startTimeoutMs ?? 30_000;
    this.launchPrefix = opts.launchPrefix ?? [];
    this.perVmUser = opts.perVmUser ?? process.getuid?.() === 0;
    this.cgroup = opts.cgroup ?? {};
    this.cgroupOverheadMb = opts.cgroupOverheadMb ?? qemuOverheadMb(verdict.accel);
  }

  async reclaim(keep: ReadonlySet<string>): Promise<ReclaimCounts> {
    let cgroups = 0;
    if (this.cgroup === false) return { cgroups };
    for (const name of await listVmCgroups(this.cgroup)) {
      if (keep.has(name)) continue;
      // A cgroup that still holds a process is refused by the kernel: it is left, and said so.
      await removeVmCgroup(name, this.cgroup).then(
        () => {
          cgroups++;
          this.log(`qemu: removed cgroup ${name}, which no VM owns`);
        },
        (error: unknown) => this.log(`qemu: cgroup ${name} no VM owns was not removed (${(error as Error).message})`),
      );
    }
    return { cgroups };
  }

  /** The user this VM's QEMU runs as (its TAP is given to it), when VMs run as users of their own. */
  async vmmOwner(spec: VmLaunchSpec): Promise<{ uid: number; gid: number } | undefined> {
    if (!this.perVmUser || spec.tapName === '') return undefined;
    const user = await ensureVmUser(vmUserName(spec.tapName));
    return { uid: user.uid, gid: user.gid };
  }

  /** The full command (prefix included) that start() runs for `spec`. */
  command(spec: VmLaunchSpec, runAs?: string): { file: string; args: string[] } {
    const qemuArgs = buildQemuArgs({
      spec,
      accel: this.verdict.accel,
      paused: this.cgroup !== false,
      ...(runAs === undefined ? {} : { runAs }),
      ...(this.verdict.tscKhz === undefined ? {} : { tscKhz: this.verdict.tscKhz }),
    });
    const [file, ...prefixArgs] = [...this.launchPrefix, this.qemuBin];
    return { file: file ?? this.qemuBin, args: [...prefixArgs, ...qemuArgs] };
  }

  async start(spec: VmLaunchSpec): Promise<VmmProcess> {
    const problem = checkSpec(spec);
    if (problem) throw new QemuStartError(spec.id, problem);
    if (spec.tapName !== '' && !(await this.tapExists(spec.tapName))) {
      // QEMU would create a missing TAP itself, outside the agent's network setup: refuse.
      throw new QemuStartError(spec.id, `TAP device ${spec.tapName} does not exist (the network setup creates it before the VM starts)`);
    }
    await mkdir(spec.runDir, { recursive: true });
    const pidFile = pidFilePath(spec.runDir);
    const socket = qmpSocketPath(spec.runDir);
    await rm(pidFile, { force: true });
    await rm(socket, { force: true });

    const deadline = Date.now() + this.startTimeoutMs;
    const user = this.perVmUser && spec.tapName !== '' ? await ensureVmUser(vmUserName(spec.tapName)) : undefined;
    const { file, args } = this.command(spec, user?.name);
    const launch = await runLauncher(file, args, this.startTimeoutMs);
    const pid = await readPid(pidFile);
    const proc = pid === undefined ? undefined : describeProcess(pid);
    const failWith = async (reason: string): Promise<never> => {
      if (proc) await killProcess(proc);
      if (this.cgroup !== false) await removeVmCgroup(spec.id, this.cgroup).catch(() => undefined);
      await rm(pidFile, { force: true });
      await rm(socket, { force: true });
      throw new QemuStartError(spec.id, reason);
    };
    if (launch.code !== 0) {
      const why = cleanStderr(launch.stderr) || `${file} exited with ${launch.signal ?? `code ${launch.code}`}`;
      return failWith(why);
    }
    if (!proc) return failWith(`QEMU reported success but no live process is recorded in ${pidFile}`);
    if (this.cgroup !== false) {
      try {
        await placeInCgroup(
          proc.pid,
          { name: spec.id, vcpus: spec.vcpus, memoryMb: spec.memoryMb, overheadMb: this.cgroupOverheadMb },
          this.cgroup,
        );
      } catch (error) {
        return failWith(`cannot limit QEMU with a cgroup: ${(error as Error).message}`);
      }
    }
    let resumed = this.cgroup === false;

    // The launcher only exits after QEMU initialised; QMP confirms the guest is running.
    let lastError = 'no answer';
    while (Date.now() < deadline) {
      if (!isProcessAlive(proc)) return failWith('QEMU exited right after starting (see the console log)');
      let qmp: QmpClient | undefined;
      try {
        qmp = await QmpClient.connect(socket, Math.max(500, Math.min(5000, deadline - Date.now())));
        const status = (await qmp.execute('query-status')) as { status?: unknown; running?: unknown } | null;
        if (status?.running === true) {
          this.log(`qemu: VM ${spec.id} running (pid ${proc.pid}, ${this.info.acceleration})`);
          return proc;
        }
        if (status?.status === 'prelaunch' && !resumed) {
          // Paused (-S) until now: it sits in its cgroup, so the guest may run.
          await qmp.execute('cont');
          resumed = true;
          continue;
        }
        lastError = `guest status is ${String(status?.status)}`;
        if (status?.status !== 'prelaunch' && status?.status !== 'inmigrate') return await failWith(lastError);
      } catch (error) {
        if (error instanceof QemuStartError) throw error;
        lastError = (error as Error).message;
      } finally {
        qmp?.close();
      }
      await sleep(100);
    }
    return failWith(`QMP did not report the guest running within ${this.startTimeoutMs} ms (${lastError})`);
  }

  /** Whether a TAP device of that name exists where QEMU will run (through the launch prefix). */
  private async tapExists(tapName: string): Promise<boolean> {
    const flags = `/sys/class/net/${tapName}/tun_flags`;
    if (this.launchPrefix.length === 0)
      return access(flags).then(
        () => true,
        () => false,
      );
    const [file, ...args] = this.launchPrefix;
    return run(file ?? 'env', [...args, 'test', '-e', flags], { timeoutMs: 10_000 }).then(
      () => true,
      () => false,
    );
  }

  isAlive(proc: VmmProcess): boolean {
    return isProcessAlive(proc);
  }

  async stop(spec: VmLaunchSpec, proc: VmmProcess, gracefulMs: number): Promise<void> {
    if (isProcessAlive(proc)) {
      const deadline = Date.now() + Math.max(0, gracefulMs);
      let asked = false;
      let qmp: QmpClient | undefined;
      try {
        if (gracefulMs > 0) {
          qmp = await QmpClient.connect(qmpSocketPath(spec.runDir), Math.max(200, Math.min(2000, gracefulMs)));
          // Repeated now and then: a key press that came before the guest's keyboard driver was
          // ready is lost. Before the guest init runs, ctrl-alt-del reboots the guest, and QEMU
          // (-no-reboot) exits: also fine.
          while (isProcessAlive(proc) && Date.now() < deadline) {
            await qmp.execute('send-key', {
              keys: [
                { type: 'qcode', data: 'ctrl' },
                { type: 'qcode', data: 'alt' },
                { type: 'qcode', data: 'delete' },
              ],
            });
            if (!asked) this.log(`qemu: VM ${spec.id}: ctrl-alt-del sent, waiting up to ${gracefulMs} ms`);
            asked = true;
            if (await waitForExit(proc, Math.min(3000, Math.max(0, deadline - Date.now())))) break;
          }
        }
      } catch (error) {
        if (isProcessAlive(proc)) this.log(`qemu: VM ${spec.id}: graceful stop failed (${(error as Error).message})`);
      } finally {
        qmp?.close();
      }
      if (asked && isProcessAlive(proc)) await waitForExit(proc, Math.max(0, deadline - Date.now()));
      if (isProcessAlive(proc)) {
        this.log(`qemu: VM ${spec.id}: ${asked ? 'did not power off in time' : 'no graceful path'}, killing pid ${proc.pid}`);
        await killProcess(proc);
      }
    }
    // Only clean up files that belong to this VMM (a newer one may already use the directory).
    const pid = await readPid(pidFilePath(spec.runDir));
    if (pid === undefined || pid === proc.pid) {
      await rm(pidFilePath(spec.runDir), { force: true });
      await rm(qmpSocketPath(spec.runDir), { force: true });
      if (this.cgroup !== false) {
        await removeVmCgroup(spec.id, this.cgroup).catch((error: unknown) =>
          this.log(`qemu: VM ${spec.id}: cgroup not removed (${(error as Error).message})`),
        );
      }
    }
  }
}

/**
 * Creates the QEMU driver. Decides the acceleration once: KVM only if /dev/kvm opens and a trial
 * boot of `<imagesDir>/vmlinux` under KVM reaches its kernel panic in time (verdict cached in
 * stateDir); otherwise TCG.
 */
export async function createQemuDriver(opts: QemuDriverOptions): Promise<QemuDriver> {
  const log = opts.log ?? (() => {});
  const qemuBin = opts.qemuBin ?? 'qemu-system-x86_64';
  let verdict: AccelVerdict;
  if (opts.accel === 'kvm' || opts.accel === 'tcg') {
    const tscKhz = opts.accel === 'tcg' ? await hostTscKhz() : undefined;
    verdict = {
      accel: opts.accel,
      reason: 'forced by configuration',
      key: '',
      checkedAt: new Date().toISOString(),
      ...(tscKhz === undefined ? {} : { tscKhz }),
    };
  } else {
    verdict = await detectAcceleration({
      qemuBin,
      kernelPath: join(opts.imagesDir, 'vmlinux'),
      stateDir: opts.stateDir,
      log,
      ...(opts.kvmTrialTimeoutMs === undefined ? {} : { trialTimeoutMs: opts.kvmTrialTimeoutMs }),
    });
  }
  log(
    `qemu: acceleration ${verdict.accel} (${verdict.reason})${verdict.accel === 'tcg' && verdict.tscKhz ? `, tsc_early_khz=${verdict.tscKhz}` : ''}`,
  );
  return new QemuDriver(verdict, { ...opts, qemuBin });
}
