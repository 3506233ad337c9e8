// Snapshot start for QEMU. The template guest's RAM is a shared file mapping (so the file is its
// memory) and migration with x-ignore-shared saves only the device state next to it (~100 KiB, in
// milliseconds). A seat maps the same file privately (copy-on-write: seats share every page none
// of them changed), loads the device state with `migrate-incoming`, and is told who it is over a
// virtio-serial port before its CPUs run. This is QEMU's "VM templating" as Kata Containers uses it.
import { chown, copyFile, mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ensureVmUser, vmUserName } from '../../host/vm-users.ts';
import { run } from '../../shared/exec.ts';
import { LineSocket } from '../../shared/line-socket.ts';
import { GUEST_READY_LINE, IDENTITY_APPLIED_PREFIX, identityLine } from '../../vms/identity.ts';
import type { GuestIdentity, SnapshotDriver, SnapshotFiles, VmLaunchSpec, VmmProcess } from '../../vms/ports.ts';
import { identitySocketPath, qmpSocketPath, TCG_TB_SIZE_MB } from './args.ts';
import { startVm } from './launch.ts';
import type { QemuContext } from './options.ts';
import { QmpClient } from './qmp.ts';
import { stopVm } from './stop.ts';

/** Bumped whenever the command line's devices change: older snapshots are then stale. */
const DEVICE_LAYOUT = 1;
/** How long a restored guest may take to apply its identity (its resident identity agent, under TCG: ~0.2 s). */
const IDENTITY_TIMEOUT_MS = 15_000;
/**
 * Where a restore's device state is copied for QEMU to read: `migrate-incoming` runs its `cat` after
 * QEMU dropped to the VM's user, who cannot enter the agent's state directory.
 */
const INCOMING_DIR = '/run/clarateach/incoming';

interface MigrationStatus {
  readonly status?: string;
  readonly 'error-desc'?: string;
}

interface RunStatus {
  readonly status?: string;
}

export function qemuSnapshots(ctx: QemuContext): SnapshotDriver {
  let compatibility: Promise<string> | undefined;
  return {
    compatibility: () => (compatibility ??= qemuCompatibility(ctx)),
    save: (spec, files, timeoutMs) => saveSnapshot(ctx, spec, files, timeoutMs),
    restore: (spec, files, identity) => restoreVm(ctx, spec, files, identity),
  };
}

async function qemuCompatibility(ctx: QemuContext): Promise<string> {
  const [file, ...prefix] = [...ctx.launchPrefix, ctx.qemuBin];
  const { stdout } = await run(file ?? ctx.qemuBin, [...prefix, '--version'], { timeoutMs: 10_000 });
  const version = stdout.split('\n')[0]?.trim() ?? 'unknown';
  return `${version}; accel ${ctx.verdict.accel} tb ${TCG_TB_SIZE_MB}; devices ${DEVICE_LAYOUT}`;
}

async function withQmp<T>(spec: VmLaunchSpec, use: (qmp: QmpClient) => Promise<T>): Promise<T> {
  const qmp = await QmpClient.connect(qmpSocketPath(spec.runDir), 5000);
  try {
    return await use(qmp);
  } finally {
    qmp.close();
  }
}

/** Polls `query-migrate` until the migration completed; throws with QEMU's reason when it failed. */
async function awaitMigration(qmp: QmpClient, deadline: number, what: string): Promise<void> {
  for (;;) {
    const state = (await qmp.execute('query-migrate')) as MigrationStatus | null;
    if (state?.status === 'completed') return;
    if (state?.status === 'failed' || state?.status === 'cancelled') {
      throw new Error(`${what} ${state.status}: ${state['error-desc'] ?? 'QEMU gave no reason'}`);
    }
    if (Date.now() > deadline) throw new Error(`${what} not finished in time (status ${String(state?.status)})`);
    await sleep(20);
  }
}

async function saveSnapshot(ctx: QemuContext, spec: VmLaunchSpec, files: SnapshotFiles, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const proc = await startVm(ctx, spec, { snapshot: { memoryPath: files.memoryPath, share: true, incoming: false } });
  let channel: LineSocket | undefined;
  try {
    channel = await LineSocket.connect(identitySocketPath(spec.runDir), deadline);
    const line = await channel.readLine(deadline);
    if (line !== GUEST_READY_LINE) throw new Error(`the template guest said "${line}" instead of "${GUEST_READY_LINE}"`);
    const temp = `${files.statePath}.tmp`;
    await withQmp(spec, async (qmp) => {
      await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
      await qmp.execute('stop');
      // The template's QEMU runs as root (it has no TAP, hence no VM user), so its `cat` may write here.
      await qmp.execute('migrate', { uri: `exec:cat > '${temp.replace(/'/g, "'\\''")}'` });
      await awaitMigration(qmp, deadline, 'saving the template');
    });
    await rename(temp, files.statePath);
  } finally {
    channel?.close();
    await stopVm(ctx, spec, proc, 0);
  }
}

async function restoreVm(ctx: QemuContext, spec: VmLaunchSpec, files: SnapshotFiles, identity: GuestIdentity): Promise<VmmProcess> {
  const line = identityLine(identity);
  const user = ctx.perVmUser && spec.tapName !== '' ? await ensureVmUser(vmUserName(spec.tapName)) : undefined;
  // Its copy of the device state, readable by its VMM's user alone.
  await mkdir(INCOMING_DIR, { recursive: true, mode: 0o711 });
  const incoming = join(INCOMING_DIR, `${spec.id}.state`);
  await copyFile(files.statePath, incoming);
  if (user) await chown(incoming, user.uid, user.gid);
  const phases: Record<string, number> = {};
  const started = performance.now();
  try {
    const proc = await startVm(ctx, spec, {
      snapshot: { memoryPath: files.memoryPath, share: false, incoming: true },
      beforeResume: (_proc, deadline) => {
        phases['launch'] = performance.now() - started;
        return loadAndIdentify(spec, incoming, line, deadline, phases);
      },
    });
    ctx.log.info({ vm: spec.id, pid: proc.pid, phases_ms: roundAll(phases) }, `qemu: VM ${spec.id} restored from a snapshot`);
    return proc;
  } finally {
    await rm(incoming, { force: true });
  }
}

/** Loads the device state, gives the paused guest its identity line, resumes it, awaits its answer. */
async function loadAndIdentify(
  spec: VmLaunchSpec,
  incoming: string,
  line: string,
  deadline: number,
  phases: Record<string, number>,
): Promise<void> {
  let mark = performance.now();
  const phase = (name: string): void => {
    const now = performance.now();
    phases[name] = now - mark;
    mark = now;
  };
  await withQmp(spec, async (qmp) => {
    await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
    await qmp.execute('migrate-incoming', { uri: `exec:cat '${incoming}'` });
    await awaitMigration(qmp, deadline, 'loading the snapshot');
    await awaitStatus(qmp, 'paused', deadline);
    phase('load');
    // Connected before the CPUs run, so the guest's waiting read sees the host end open.
    const channel = await LineSocket.connect(identitySocketPath(spec.runDir), deadline);
    try {
      channel.writeLine(line);
      await qmp.execute('cont');
      const answer = await channel.readLine(Math.min(deadline, Date.now() + IDENTITY_TIMEOUT_MS));
      if (!answer.startsWith(IDENTITY_APPLIED_PREFIX)) throw new Error(`the restored guest refused its identity: ${answer}`);
      phase('identity');
    } finally {
      channel.close();
    }
  });
}

function roundAll(values: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(values).map(([k, v]) => [k, Math.round(v * 10) / 10]));
}

async function awaitStatus(qmp: QmpClient, want: string, deadline: number): Promise<void> {
  for (;;) {
    const state = (await qmp.execute('query-status')) as RunStatus | null;
    if (state?.status === want) return;
    if (Date.now() > deadline) throw new Error(`guest status is ${String(state?.status)}, not ${want}`);
    await sleep(10);
  }
}
