// Stopping a VM (the stop phase): Ctrl-Alt-Del through the API (docs/api_requests/actions.md),
// a grace period, SIGKILL; then the socket, cgroup and jail of the VMM that is gone are removed.
import { rm } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { isProcessAlive, killProcess, waitForExit } from '../../host/process.ts';
import type { VmLaunchSpec, VmmProcess } from '../../vms/ports.ts';
import { FirecrackerApiClient, socketAnswers } from './api-client.ts';
import { consoleSince, fileSize } from './console-log.ts';
import { message, type DriverContext } from './options.ts';
import { vmmSetup, type VmmSetup } from './setup.ts';
import { removeSurroundings, surroundingsOf } from './surroundings.ts';

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
    if (GUEST_HALTED.test(await consoleSince(consoleLogPath, consoleStart))) {
      // Give Firecracker a moment in case it is exiting on its own anyway.
      return (await waitForExit(proc, 200)) ? 'exited' : 'halted';
    }
    if (Date.now() >= deadline) return 'timeout';
    await sleep(Math.min(50, Math.max(0, deadline - Date.now())));
  }
}

export async function stopVm(ctx: DriverContext, spec: VmLaunchSpec, proc: VmmProcess, gracefulMs: number): Promise<void> {
  const label = `firecracker ${spec.id}`;
  let setup: VmmSetup | undefined;
  try {
    setup = await vmmSetup(ctx, spec, false);
  } catch (error) {
    ctx.log.warn(
      { vm: spec.id },
      `${label}: cannot work out its socket, jail and cgroup (${message(error)}): stopping pid ${proc.pid} only`,
    );
  }
  const socketPath = setup?.command.apiSocketPath;
  if (isProcessAlive(proc)) {
    const gone = socketPath && gracefulMs > 0 ? await shutDownGracefully(ctx, spec, proc, socketPath, gracefulMs, label) : false;
    if (!gone && isProcessAlive(proc)) {
      ctx.log.info({ vm: spec.id, pid: proc.pid }, `${label}: killing pid ${proc.pid}`);
      await killProcess(proc);
      if (isProcessAlive(proc)) throw new Error(`${label}: pid ${proc.pid} survived SIGKILL`);
    }
  }
  // Only a socket whose VMM is gone: never pull the socket from under a live process.
  if (isProcessAlive(proc)) return;
  if (socketPath) await rm(socketPath, { force: true });
  if (setup) {
    const problems = await removeSurroundings(ctx, surroundingsOf(setup), label);
    if (problems.length > 0) throw new Error(`${label}: the VMM is gone, but ${problems.join('; ')}`);
  }
}

/** True when the VMM exited within `gracefulMs` after Ctrl-Alt-Del. */
async function shutDownGracefully(
  ctx: DriverContext,
  spec: VmLaunchSpec,
  proc: VmmProcess,
  socketPath: string,
  gracefulMs: number,
  label: string,
): Promise<boolean> {
  const deadline = Date.now() + Math.max(0, gracefulMs);
  if (!(await socketAnswers(socketPath, Math.min(1_000, gracefulMs)))) return false;
  const consoleStart = await fileSize(spec.consoleLogPath);
  try {
    // The guest's init shuts down on Ctrl-Alt-Del; with reboot=k the reset ends Firecracker.
    const client = new FirecrackerApiClient(socketPath);
    await client.createSyncAction({ action_type: 'SendCtrlAltDel' }, { timeoutMs: Math.max(100, Math.min(2_000, deadline - Date.now())) });
    ctx.log.info({ vm: spec.id }, `${label}: sent Ctrl-Alt-Del, waiting up to ${gracefulMs} ms`);
    const outcome = await waitForShutdown(proc, spec.consoleLogPath, consoleStart, deadline);
    if (outcome === 'halted') ctx.log.info({ vm: spec.id }, `${label}: the guest halted instead of rebooting`);
    return outcome === 'exited';
  } catch (error) {
    ctx.log.warn({ vm: spec.id }, `${label}: no graceful shutdown: ${message(error)}`);
    return false;
  }
}
