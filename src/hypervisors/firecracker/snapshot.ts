// Snapshot start for Firecracker (docs/snapshotting/snapshot-support.md). The template boots
// through the jailer with a vsock device and an unconnected TAP of its own, says "ready" over vsock
// once its services run, and is paused and saved (a full snapshot: the device state and the guest
// memory as a file). A seat gets a fresh jailed VMM that loads it: the memory file mapped privately
// (seats share every page none of them changed), the saved interface pointed at the seat's TAP
// (`network_overrides`, Firecracker 1.12), the guest resumed; the guest reconnects over vsock (the
// restore resets vsock connections) and is handed its identity line, as on QEMU.
//
// Drive paths are recorded in the snapshot. Through the jailer every VM sees its files at the same
// jail-relative paths (`/layer.ext4`), so each seat's own copy of the layer sits where the template's
// was; without the jailer every seat would reopen the template's own layer, so restore refuses.
import { constants as fsConstants } from 'node:fs';
import { chmod, chown, copyFile, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { run } from '../../shared/exec.ts';
import { GUEST_READY_LINE, IDENTITY_APPLIED_PREFIX, identityLine } from '../../vms/identity.ts';
import type { GuestIdentity, SnapshotDriver, SnapshotFiles, VmLaunchSpec, VmmProcess } from '../../vms/ports.ts';
import type { SnapshotLoadParams, Vsock } from './api-types.ts';
import { NET_IFACE_ID } from './boot-requests.ts';
import { ChannelClosed } from '../../shared/line-socket.ts';
import { GuestListener } from './guest-channel.ts';
import { DEFAULT_JAIL_UID_BASE, errnoCode, jailIdsForVm } from './jail.ts';
import { linkOrBind } from './jail-stage.ts';
import { startVm, type LaunchedVmm } from './launch.ts';
import type { DriverContext } from './options.ts';
import { stopVm } from './stop.ts';
import { templateTapName, type TemplateTaps } from './template-tap.ts';

/** Bumped whenever the devices of a template boot change: older snapshots are then stale. */
const DEVICE_LAYOUT = 1;
/** `network_overrides` on /snapshot/load came with Firecracker 1.12.0 (CHANGELOG, #4731). */
export const MIN_RESTORE_VERSION: readonly [number, number, number] = [1, 12, 0];
/** How long a restored guest may take to reconnect and apply its identity. */
const IDENTITY_TIMEOUT_MS = 15_000;
/** The port the guest's init connects to on the host (CID 2): clarateach-init, await_identity. */
export const IDENTITY_VSOCK_PORT = 52;
/** The vsock device, the same in every jail: no `vsock_override` (Firecracker 1.16) is needed. */
export const TEMPLATE_VSOCK: Vsock = { guest_cid: 3, uds_path: '/v.sock' };
/** Where the snapshot's files are inside a jail. */
export const JAIL_SNAPSHOT_FILES = { state: 'snapshot.state', memory: 'snapshot.mem' } as const;

export const NEEDS_JAILER =
  'firecracker snapshot start needs the jailer (JAILER_BIN): a snapshot records its drive paths, and only in a jail of its own does each seat find its own writable layer at the path the template had';

export function firecrackerSnapshots(ctx: DriverContext, taps: TemplateTaps): SnapshotDriver {
  let version: Promise<string> | undefined;
  const versionLine = (): Promise<string> =>
    (version ??= firecrackerVersion(ctx).catch((error: unknown) => {
      version = undefined;
      throw error;
    }));
  const refusal = async (): Promise<string | undefined> => (ctx.opts.jailerBin ? versionRefusal(await versionLine()) : NEEDS_JAILER);
  return {
    compatibility: async () => `${await versionLine()}; ${ctx.opts.jailerBin ? 'jailer' : 'no jailer'}; devices ${DEVICE_LAYOUT}`,
    async save(spec, files, timeoutMs) {
      const why = await refusal();
      if (why) throw new Error(why);
      await saveSnapshot(ctx, taps, spec, files, timeoutMs);
    },
    async restore(spec, files, identity) {
      const why = await refusal();
      if (why) throw new Error(why);
      return restoreVm(ctx, spec, files, identity);
    },
  };
}

/** The first line of `firecracker --version`, e.g. `Firecracker v1.12.0`. */
async function firecrackerVersion(ctx: DriverContext): Promise<string> {
  const { stdout } = await run(ctx.opts.firecrackerBin, ['--version'], { timeoutMs: 10_000 });
  return stdout.split('\n')[0]?.trim() || 'unknown';
}

/** Why this Firecracker cannot restore a seat, or undefined when it can. */
export function versionRefusal(versionLine: string): string | undefined {
  const m = /v?(\d+)\.(\d+)\.(\d+)/.exec(versionLine);
  if (!m) return `cannot tell the Firecracker version from "${versionLine}"`;
  const have = [Number(m[1]), Number(m[2]), Number(m[3])];
  for (let i = 0; i < 3; i++) {
    const a = have[i] ?? 0;
    const b = MIN_RESTORE_VERSION[i] ?? 0;
    if (a > b) return undefined;
    if (a < b) {
      return `${versionLine} cannot give a restored seat its own TAP: network_overrides needs Firecracker ${MIN_RESTORE_VERSION.join('.')} or later`;
    }
  }
  return undefined;
}

function jailRoot(vmm: LaunchedVmm): string {
  if (vmm.chrootDir === undefined) throw new Error(NEEDS_JAILER);
  return vmm.chrootDir;
}

async function saveSnapshot(
  ctx: DriverContext,
  taps: TemplateTaps,
  spec: VmLaunchSpec,
  files: SnapshotFiles,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const owner = jailIdsForVm(spec.mac, ctx.jail.uidBase ?? DEFAULT_JAIL_UID_BASE);
  const template: VmLaunchSpec = { ...spec, tapName: templateTapName(spec.id) };
  let listener: GuestListener | undefined;
  await taps.create(template.tapName, owner);
  try {
    const proc = await startVm(ctx, template, {
      vsock: TEMPLATE_VSOCK,
      stage: async (chrootDir, ids) => {
        listener = await GuestListener.listen(join(chrootDir, `${TEMPLATE_VSOCK.uds_path}_${IDENTITY_VSOCK_PORT}`), ids);
      },
      ready: async (vmm) => {
        if (!listener) throw new Error('internal: no identity listener');
        const channel = await listener.accept(deadline);
        const line = await channel.readLine(deadline);
        if (line !== GUEST_READY_LINE) throw new Error(`the template guest said "${line}" instead of "${GUEST_READY_LINE}"`);
        await vmm.client.patchVm({ state: 'Paused' });
        const root = jailRoot(vmm);
        // Writing the guest's memory out takes as long as the disk needs: the whole time left.
        await vmm.client.createSnapshot(
          { snapshot_type: 'Full', snapshot_path: `/${JAIL_SNAPSHOT_FILES.state}`, mem_file_path: `/${JAIL_SNAPSHOT_FILES.memory}` },
          { timeoutMs: Math.max(ctx.requestTimeoutMs, deadline - Date.now()) },
        );
        // Out of the jail before the stop removes it.
        await moveOut(join(root, JAIL_SNAPSHOT_FILES.state), files.statePath);
        await moveOut(join(root, JAIL_SNAPSHOT_FILES.memory), files.memoryPath);
      },
    });
    await stopVm(ctx, template, proc, 0);
    // The jail gave the layer to the template's uid; seats get copies of it, made by root.
    await chown(spec.layerDiskPath, process.getuid?.() ?? 0, process.getgid?.() ?? 0);
  } finally {
    await listener?.close();
    await taps.remove(template.tapName);
  }
}

/** A file the jailed VMM wrote, moved to `dest` and given back to the agent, readable by every seat's VMM. */
async function moveOut(src: string, dest: string): Promise<void> {
  try {
    await rename(src, dest);
  } catch (error) {
    if (errnoCode(error) !== 'EXDEV') throw error;
    await copyFile(src, dest, fsConstants.COPYFILE_FICLONE);
    await rm(src, { force: true });
  }
  await chown(dest, process.getuid?.() ?? 0, process.getgid?.() ?? 0);
  // Each seat's VMM (a uid of its own) opens it read-only through a hard link in its jail.
  await chmod(dest, 0o644);
}

async function restoreVm(ctx: DriverContext, spec: VmLaunchSpec, files: SnapshotFiles, identity: GuestIdentity): Promise<VmmProcess> {
  const line = identityLine(identity);
  const load: SnapshotLoadParams = {
    snapshot_path: `/${JAIL_SNAPSHOT_FILES.state}`,
    mem_backend: { backend_type: 'File', backend_path: `/${JAIL_SNAPSHOT_FILES.memory}` },
    network_overrides: [{ iface_id: NET_IFACE_ID, host_dev_name: spec.tapName }],
    resume_vm: true,
  };
  const started = performance.now();
  let loaded = 0;
  let listener: GuestListener | undefined;
  try {
    const proc = await startVm(ctx, spec, {
      load,
      stage: async (chrootDir, ids) => {
        await linkOrBind(files.statePath, join(chrootDir, JAIL_SNAPSHOT_FILES.state));
        await linkOrBind(files.memoryPath, join(chrootDir, JAIL_SNAPSHOT_FILES.memory));
        listener = await GuestListener.listen(join(chrootDir, `${TEMPLATE_VSOCK.uds_path}_${IDENTITY_VSOCK_PORT}`), ids);
      },
      ready: async () => {
        loaded = performance.now();
        if (!listener) throw new Error('internal: no identity listener');
        await handIdentity(listener, line, Date.now() + IDENTITY_TIMEOUT_MS);
      },
    });
    const ms = (a: number, b: number): number => Math.round((b - a) * 10) / 10;
    ctx.log.info(
      { vm: spec.id, pid: proc.pid, phases_ms: { load: ms(started, loaded), identity: ms(loaded, performance.now()) } },
      `firecracker ${spec.id}: restored from a snapshot`,
    );
    return proc;
  } finally {
    await listener?.close();
  }
}

/**
 * Gives the restored guest its identity line and awaits its answer. The guest connects again
 * whenever its connection ends (the restore resets vsock), so a connection that closes before the
 * answer is followed by the next one.
 */
async function handIdentity(listener: GuestListener, line: string, deadline: number): Promise<void> {
  for (;;) {
    const channel = await listener.accept(deadline);
    try {
      const hello = await channel.readLine(deadline);
      if (hello !== GUEST_READY_LINE) throw new Error(`the restored guest said "${hello}" instead of "${GUEST_READY_LINE}"`);
      channel.writeLine(line);
      const answer = await channel.readLine(deadline);
      if (!answer.startsWith(IDENTITY_APPLIED_PREFIX)) throw new Error(`the restored guest refused its identity: ${answer}`);
      return;
    } catch (error) {
      if (!(error instanceof ChannelClosed)) throw error;
    } finally {
      channel.close();
    }
  }
}
