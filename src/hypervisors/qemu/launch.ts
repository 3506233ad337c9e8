// Starting a VM (the launch phase): the spec checked, QEMU run through its daemonizing launcher
// (it exits once the VM is set up, leaving QEMU detached), QEMU put into its cgroup while paused,
// then resumed and awaited over QMP until the guest runs.
import { spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir, readFile, rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { placeInCgroup, removeVmCgroup } from '../../host/cgroups/index.ts';
import { describeProcess, isProcessAlive, killProcess } from '../../host/process.ts';
import { ensureVmUser, vmUserName } from '../../host/vm-users.ts';
import { INTERFACE_NAME } from '../../network/tap.ts';
import { run } from '../../shared/exec.ts';
import { readPidFile } from '../../shared/files.ts';
import type { VmLaunchSpec, VmmProcess } from '../../vms/ports.ts';
import { buildQemuArgs, MAX_SOCKET_PATH, pidFilePath, qmpSocketPath, type QemuCommandInput } from './args.ts';
import { QemuStartError, type QemuContext } from './options.ts';
import { QmpClient } from './qmp.ts';

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
  if (spec.tapName !== '' && !INTERFACE_NAME.test(spec.tapName)) return `invalid TAP name "${spec.tapName}"`;
  if (!MAC.test(spec.mac) && spec.tapName !== '') return `invalid MAC address "${spec.mac}"`;
  if (!Number.isInteger(spec.vcpus) || spec.vcpus < 1) return `invalid vcpus ${spec.vcpus}`;
  if (!Number.isInteger(spec.memoryMb) || spec.memoryMb < 64) return `invalid memoryMb ${spec.memoryMb}`;
  if (qmpSocketPath(spec.runDir).length > MAX_SOCKET_PATH) {
    return `runDir ${spec.runDir} is too long for a unix socket path (${MAX_SOCKET_PATH} bytes at most)`;
  }
  return undefined;
}

/** How a start differs from a cold boot: a snapshot's template guest, or a seat restored from one. */
export interface LaunchVariant {
  readonly snapshot?: NonNullable<QemuCommandInput['snapshot']>;
  /** Runs once QEMU sits in its cgroup, before its CPUs run: a restore loads its state here. */
  readonly beforeResume?: (proc: VmmProcess, deadline: number) => Promise<void>;
}

/** The full command (launch prefix included) that starts `spec`'s QEMU, as `runAs` when given. */
export function qemuCommand(
  ctx: QemuContext,
  spec: VmLaunchSpec,
  runAs?: string,
  snapshot?: QemuCommandInput['snapshot'],
): { file: string; args: string[] } {
  const qemuArgs = buildQemuArgs({
    spec,
    accel: ctx.verdict.accel,
    paused: ctx.cgroup !== false || snapshot?.incoming === true,
    ...(runAs === undefined ? {} : { runAs }),
    ...(snapshot === undefined ? {} : { snapshot }),
    ...(ctx.verdict.tscKhz === undefined ? {} : { tscKhz: ctx.verdict.tscKhz }),
  });
  const [file, ...prefixArgs] = [...ctx.launchPrefix, ctx.qemuBin];
  return { file: file ?? ctx.qemuBin, args: [...prefixArgs, ...qemuArgs] };
}

interface LaunchResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stderr: string;
}

/**
 * Runs the daemonizing QEMU launcher: it exits 0 once the VM runs, or non-zero with a reason.
 * `fds` become its descriptors 3, 4, ...
 */
function runLauncher(file: string, args: readonly string[], timeoutMs: number, fds: readonly number[] = []): Promise<LaunchResult> {
  return new Promise((resolve) => {
    const child = spawn(file, args, { detached: true, stdio: ['ignore', 'ignore', 'pipe', ...fds] });
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
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
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

/**
 * Whether a network device of that name exists where QEMU will run (through the launch prefix).
 * /proc/self/net is the reader's own network namespace; /sys/class/net is the one sysfs was
 * mounted in, which is another one for an agent started with `nsenter --net`.
 */
async function tapExists(ctx: QemuContext, tapName: string): Promise<boolean> {
  const devices = '/proc/self/net/dev';
  const [file, ...args] = ctx.launchPrefix;
  try {
    const text =
      file === undefined ? await readFile(devices, 'utf8') : (await run(file, [...args, 'cat', devices], { timeoutMs: 10_000 })).stdout;
    return text.split('\n').some((line) => line.trimStart().startsWith(`${tapName}:`));
  } catch {
    return false;
  }
}

export async function startVm(ctx: QemuContext, spec: VmLaunchSpec, variant: LaunchVariant = {}): Promise<VmmProcess> {
  const problem = checkSpec(spec);
  if (problem) throw new QemuStartError(spec.id, problem);
  if (spec.tapName !== '' && !(await tapExists(ctx, spec.tapName))) {
    // QEMU would create a missing TAP itself, outside the agent's network setup: refuse.
    throw new QemuStartError(spec.id, `TAP device ${spec.tapName} does not exist (the network setup creates it before the VM starts)`);
  }
  await mkdir(spec.runDir, { recursive: true });
  const pidFile = pidFilePath(spec.runDir);
  await rm(pidFile, { force: true });
  await rm(qmpSocketPath(spec.runDir), { force: true });

  const deadline = Date.now() + ctx.startTimeoutMs;
  const user = ctx.perVmUser && spec.tapName !== '' ? await ensureVmUser(vmUserName(spec.tapName)) : undefined;
  const { file, args } = qemuCommand(ctx, spec, user?.name, variant.snapshot);
  const fds = variant.snapshot?.incoming ? [openSync(spec.layerDiskPath, 'r'), openSync(spec.layerDiskPath, 'r+')] : [];
  let launch: LaunchResult;
  try {
    launch = await runLauncher(file, args, ctx.startTimeoutMs, fds);
  } finally {
    for (const fd of fds) closeSync(fd);
  }
  const pid = await readPidFile(pidFile);
  const proc = pid === undefined ? undefined : describeProcess(pid);
  const fail = (reason: string): Promise<never> => undoStart(ctx, spec, proc, reason);
  if (launch.code !== 0) return fail(cleanStderr(launch.stderr) || `${file} exited with ${launch.signal ?? `code ${launch.code}`}`);
  if (!proc) return fail(`QEMU reported success but no live process is recorded in ${pidFile}`);
  if (ctx.cgroup !== false) {
    try {
      await placeInCgroup(
        proc.pid,
        { name: spec.id, vcpus: spec.vcpus, memoryMb: spec.memoryMb, overheadMb: ctx.cgroupOverheadMb },
        ctx.cgroup,
      );
    } catch (error) {
      return fail(`cannot limit QEMU with a cgroup: ${(error as Error).message}`);
    }
  }
  if (variant.beforeResume) {
    try {
      await variant.beforeResume(proc, deadline);
    } catch (error) {
      return fail((error as Error).message);
    }
  }
  await waitRunning(ctx, spec, proc, deadline, fail);
  ctx.log.info({ vm: spec.id, pid: proc.pid }, `qemu: VM ${spec.id} running (pid ${proc.pid}, ${ctx.verdict.accel})`);
  return proc;
}

/** Kills what started, removes its cgroup, pid file and socket, and throws the reason. */
async function undoStart(ctx: QemuContext, spec: VmLaunchSpec, proc: VmmProcess | undefined, reason: string): Promise<never> {
  if (proc) await killProcess(proc);
  if (ctx.cgroup !== false) await removeVmCgroup(spec.id, ctx.cgroup).catch(() => undefined);
  await rm(pidFilePath(spec.runDir), { force: true });
  await rm(qmpSocketPath(spec.runDir), { force: true });
  throw new QemuStartError(spec.id, reason);
}

/** The launcher only exits after QEMU initialised; QMP confirms the guest runs (resuming it once it sits in its cgroup). */
async function waitRunning(
  ctx: QemuContext,
  spec: VmLaunchSpec,
  proc: VmmProcess,
  deadline: number,
  fail: (reason: string) => Promise<never>,
): Promise<void> {
  let resumed = ctx.cgroup === false;
  let lastError = 'no answer';
  while (Date.now() < deadline) {
    if (!isProcessAlive(proc)) await fail('QEMU exited right after starting (see the console log)');
    let qmp: QmpClient | undefined;
    try {
      qmp = await QmpClient.connect(qmpSocketPath(spec.runDir), Math.max(500, Math.min(5000, deadline - Date.now())));
      const status = (await qmp.execute('query-status')) as { status?: unknown; running?: unknown } | null;
      if (status?.running === true) return;
      if (status?.status === 'prelaunch' && !resumed) {
        // Paused (-S) until now: it sits in its cgroup, so the guest may run.
        await qmp.execute('cont');
        resumed = true;
        continue;
      }
      lastError = `guest status is ${String(status?.status)}`;
      if (status?.status !== 'prelaunch' && status?.status !== 'inmigrate') await fail(lastError);
    } catch (error) {
      if (error instanceof QemuStartError) throw error;
      lastError = (error as Error).message;
    } finally {
      qmp?.close();
    }
    await sleep(100);
  }
  await fail(`QMP did not report the guest running within ${ctx.startTimeoutMs} ms (${lastError})`);
}
