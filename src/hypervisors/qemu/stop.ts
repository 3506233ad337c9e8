// Stopping a VM (the stop phase): ctrl-alt-del through QMP (an emulated i8042; the guest kernel
// turns it into SIGINT for its init, which powers off), a grace period, SIGKILL; then the pid
// file, socket and cgroup of that VMM are removed.
import { rm } from 'node:fs/promises';
import { removeVmCgroup } from '../../host/cgroups/index.ts';
import { isProcessAlive, killProcess, waitForExit } from '../../host/process.ts';
import { readPidFile } from '../../shared/files.ts';
import type { VmLaunchSpec, VmmProcess } from '../../vms/ports.ts';
import { pidFilePath, qmpSocketPath } from './args.ts';
import type { QemuContext } from './options.ts';
import { QmpClient } from './qmp.ts';

const CTRL_ALT_DEL = {
  keys: [
    { type: 'qcode', data: 'ctrl' },
    { type: 'qcode', data: 'alt' },
    { type: 'qcode', data: 'delete' },
  ],
};

export async function stopVm(ctx: QemuContext, spec: VmLaunchSpec, proc: VmmProcess, gracefulMs: number): Promise<void> {
  if (isProcessAlive(proc)) {
    const deadline = Date.now() + Math.max(0, gracefulMs);
    const asked = gracefulMs > 0 ? await askToPowerOff(ctx, spec, proc, gracefulMs, deadline) : false;
    if (asked && isProcessAlive(proc)) await waitForExit(proc, Math.max(0, deadline - Date.now()));
    if (isProcessAlive(proc)) {
      ctx.log.info(
        { vm: spec.id, pid: proc.pid },
        `qemu: VM ${spec.id}: ${asked ? 'did not power off in time' : 'no graceful path'}, killing pid ${proc.pid}`,
      );
      await killProcess(proc);
    }
  }
  // Only clean up files that belong to this VMM (a newer one may already use the directory).
  const pid = await readPidFile(pidFilePath(spec.runDir));
  if (pid !== undefined && pid !== proc.pid) return;
  await rm(pidFilePath(spec.runDir), { force: true });
  await rm(qmpSocketPath(spec.runDir), { force: true });
  if (ctx.cgroup !== false) {
    await removeVmCgroup(spec.id, ctx.cgroup).catch((error: unknown) =>
      ctx.log.warn({ vm: spec.id }, `qemu: VM ${spec.id}: cgroup not removed (${(error as Error).message})`),
    );
  }
}

/**
 * Sends ctrl-alt-del, again now and then: a key press that came before the guest's keyboard
 * driver was ready is lost. Before the guest init runs, ctrl-alt-del reboots the guest, and QEMU
 * (-no-reboot) exits: also fine. True when at least one was sent.
 */
async function askToPowerOff(
  ctx: QemuContext,
  spec: VmLaunchSpec,
  proc: VmmProcess,
  gracefulMs: number,
  deadline: number,
): Promise<boolean> {
  let asked = false;
  let qmp: QmpClient | undefined;
  try {
    qmp = await QmpClient.connect(qmpSocketPath(spec.runDir), Math.max(200, Math.min(2000, gracefulMs)));
    while (isProcessAlive(proc) && Date.now() < deadline) {
      await qmp.execute('send-key', CTRL_ALT_DEL);
      if (!asked) ctx.log.info({ vm: spec.id }, `qemu: VM ${spec.id}: ctrl-alt-del sent, waiting up to ${gracefulMs} ms`);
      asked = true;
      if (await waitForExit(proc, Math.min(3000, Math.max(0, deadline - Date.now())))) break;
    }
  } catch (error) {
    if (isProcessAlive(proc)) ctx.log.warn({ vm: spec.id }, `qemu: VM ${spec.id}: graceful stop failed (${(error as Error).message})`);
  } finally {
    qmp?.close();
  }
  return asked;
}
