// Readying the host for one start (part of the launch phase): a free API socket path, nothing left
// in the VM's cgroup, and the cgroup or the jail made. On failure nothing of it is left.
import { mkdir, rm } from 'node:fs/promises';
import { createVmCgroup } from '../../host/cgroups/index.ts';
import type { VmLaunchSpec } from '../../vms/ports.ts';
import { socketAnswers } from './api-client.ts';
import { MAX_SOCKET_PATH_BYTES } from './command.ts';
import { processesOfUid, removeJailsOf } from './jail.ts';
import { stageJail } from './jail-stage.ts';
import { FirecrackerStartError, message, type DriverContext } from './options.ts';
import type { VmmSetup } from './setup.ts';

/** More files for the jail, once it is staged (snapshot files, the identity channel's socket). */
export type LaunchStage = (chrootDir: string, owner: { readonly uid: number; readonly gid: number }) => Promise<void>;
import { killCgroupMembers, removeSurroundings, surroundingsOf } from './surroundings.ts';

/** A free API socket path, and the VM's cgroup or jail made; on failure nothing is left. */
export async function prepareHost(
  ctx: DriverContext,
  spec: VmLaunchSpec,
  setup: VmmSetup,
  label: string,
  stage?: LaunchStage,
): Promise<void> {
  const socketPath = setup.command.apiSocketPath;
  if (Buffer.byteLength(socketPath) > MAX_SOCKET_PATH_BYTES) {
    throw new FirecrackerStartError(`${label}: API socket path too long for a unix socket: ${socketPath}`, undefined);
  }
  await mkdir(spec.runDir, { recursive: true });
  // Anything still in this VM's cgroup is left from an earlier run of it (a VMM that no longer
  // answers, a jailer that crashed, or a jailed VMM an agent started and died before recording:
  // its command line names only paths in its jail, so the agent's start-up sweep cannot see it).
  // The lifecycle starts a VM only when no VMM of it is recorded running. Its cgroup and jail go
  // with it: the jailer makes both afresh.
  if ((await killCgroupMembers(ctx, setup.cgroup, label)) > 0) {
    const problems = await removeSurroundings(ctx, surroundingsOf(setup), label);
    if (problems.length) throw new FirecrackerStartError(`${label}: a leftover VMM's cgroup or jail: ${problems.join('; ')}`, undefined);
  }
  // A socket left by a VMM that died is stale: Firecracker refuses to bind over it. A socket that
  // still answers belongs to a live VMM outside the cgroup, which must be stopped first, not orphaned.
  if (await socketAnswers(socketPath)) {
    throw new FirecrackerStartError(`${label}: a VMM already answers on ${socketPath}; stop it first`, undefined);
  }
  await rm(socketPath, { force: true });
  try {
    if (setup.jail) {
      await prepareJail(ctx, spec, setup, label);
      await stage?.(setup.jail.chrootDir, setup.jail.ids);
    } else if (setup.cgroup && setup.placement) await createVmCgroup({ name: setup.cgroup.name, ...setup.limits }, setup.placement);
  } catch (error) {
    const problems = await removeSurroundings(ctx, surroundingsOf(setup), label);
    throw new FirecrackerStartError(`${label}: ${message(error)}${problems.length ? ` (cleanup: ${problems.join('; ')})` : ''}`, undefined);
  }
}

async function prepareJail(ctx: DriverContext, spec: VmLaunchSpec, setup: VmmSetup, label: string): Promise<void> {
  if (!setup.jail) return;
  const { ids, chrootBaseDir, chrootDir } = setup.jail;
  const users = await processesOfUid(ids.uid);
  if (users.length > 0) {
    throw new Error(
      `uid ${ids.uid} of this VM's jail is in use by pid ${users.join(', ')}` +
        ' (a leftover VMM, or another VM whose address has the same low 16 bits)',
    );
  }
  await removeJailsOf(chrootBaseDir, setup.command.instanceId);
  const staged = await stageJail({ chrootBaseDir, chrootDir, spec, ids });
  ctx.log.info(
    { vm: spec.id, uid: ids.uid, files: staged },
    `${label}: jail ${chrootDir} (uid/gid ${ids.uid}), files ${JSON.stringify(staged)}`,
  );
}
