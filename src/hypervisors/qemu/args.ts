// Pure construction of the QEMU command line for one VM (no I/O): the driver and the tests share
// it, and an agent that restarts derives the same socket and pid file paths from the same spec.
import { join } from 'node:path';
import type { VmLaunchSpec } from '../../vms/ports.ts';

export type Acceleration = 'kvm' | 'tcg';

export const QMP_SOCKET_NAME = 'qmp.sock';
/** The identity channel's host end (a virtio-serial port named IDENTITY_PORT_NAME in the guest). */
export const IDENTITY_SOCKET_NAME = 'identity.sock';
export const IDENTITY_PORT_NAME = 'org.clarateach.identity';
export const PID_FILE_NAME = 'qemu.pid';

/** Unix socket paths longer than this do not fit in sockaddr_un. */
export const MAX_SOCKET_PATH = 107;

/**
 * TCG's translation cache, in MiB. Unbounded it grows toward 1 GiB per VM, which no per-VM memory
 * limit can allow for; 128 MiB keeps a busy guest's code cached.
 */
export const TCG_TB_SIZE_MB = 128;

/** Memory QEMU needs beyond the guest's RAM: its own heap and devices, plus the TCG cache. */
export function qemuOverheadMb(accel: Acceleration): number {
  return accel === 'tcg' ? 256 + TCG_TB_SIZE_MB : 192;
}

export function qmpSocketPath(runDir: string): string {
  return join(runDir, QMP_SOCKET_NAME);
}

export function identitySocketPath(runDir: string): string {
  return join(runDir, IDENTITY_SOCKET_NAME);
}

export function pidFilePath(runDir: string): string {
  return join(runDir, PID_FILE_NAME);
}

function hasArg(args: string, name: string): boolean {
  return args.split(/\s+/).some((a) => a === name || a.startsWith(`${name}=`));
}

/**
 * The guest kernel command line: the lifecycle's arguments plus what this driver needs, unless
 * the lifecycle already set them: the serial console, a reboot on panic (QEMU runs with
 * -no-reboot, so a panicked guest ends its VMM), and under TCG the host TSC frequency, without
 * which about one boot in five hangs after "tsc: Marking TSC unstable".
 */
export function kernelCommandLine(specArgs: string, accel: Acceleration, tscKhz: number | undefined): string {
  const args = specArgs
    .trim()
    .split(/\s+/)
    .filter((a) => a !== '');
  const base = args.join(' ');
  if (!hasArg(base, 'console')) args.push('console=ttyS0');
  if (!hasArg(base, 'panic')) args.push('panic=1');
  if (accel === 'tcg' && tscKhz !== undefined && !hasArg(base, 'tsc_early_khz')) args.push(`tsc_early_khz=${tscKhz}`);
  return args.join(' ');
}

/** QEMU's -drive/-netdev option values use ',' as separator; a literal comma is doubled. */
export function escapeOptionValue(value: string): string {
  return value.replace(/,/g, ',,');
}

export interface QemuCommandInput {
  readonly spec: VmLaunchSpec;
  readonly accel: Acceleration;
  readonly tscKhz?: number;
  /** Start as a daemon (-daemonize): the launcher exits once the VM runs, or fails with a reason. */
  readonly daemonize?: boolean;
  /**
   * Drop to this user once QEMU has opened its files, TAP and sockets (-runas), under a seccomp
   * sandbox. QEMU 7.2 cannot combine -runas with elevateprivileges=deny (it needs setuid) nor
   * -daemonize with spawn=deny (it forks); with -runas it runs with no capabilities and
   * no_new_privs, so exec cannot raise privileges either.
   */
  readonly runAs?: string;
  /** Start with the CPUs stopped (-S): the driver resumes them once QEMU sits in its cgroup. */
  readonly paused?: boolean;
  /**
   * A snapshot's template guest (`share: true`: its RAM is the file, so the file is the saved
   * memory) or a seat restored from it (`share: false`: the file mapped privately, so seats share
   * the pages none of them changed). Either way the guest also gets the identity channel, and
   * both command lines have the same devices in the same order, as migration requires.
   */
  readonly snapshot?: { readonly memoryPath: string; readonly share: boolean; readonly incoming: boolean };
}

/**
 * File descriptors 3 (read-only) and 4 (read-write) of a restoring QEMU: its writable layer. QEMU
 * opens the layer again once the incoming migration completed, when it already runs as the VM's
 * user, who cannot enter the agent's state directory; from an fd set it dups these instead.
 */
export const LAYER_FDS = [3, 4] as const;

export function buildQemuArgs(input: QemuCommandInput): string[] {
  const { spec, accel } = input;
  const e = escapeOptionValue;
  const args = [
    '-name',
    `guest=${e(spec.id)}`,
    '-machine',
    input.snapshot ? 'microvm,acpi=on,memory-backend=ram' : 'microvm,acpi=on',
    '-accel',
    accel === 'tcg' ? `tcg,tb-size=${TCG_TB_SIZE_MB}` : 'kvm',
    '-cpu',
    accel === 'kvm' ? 'host' : 'max',
    '-smp',
    String(spec.vcpus),
    '-m',
    `${spec.memoryMb}M`,
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-no-reboot',
    '-msg',
    'timestamp=on',
    // An i8042 lets `send-key ctrl-alt-delete` reach the guest: Linux turns it into SIGINT for
    // init, exactly as with Firecracker's SendCtrlAltDel.
    '-device',
    'i8042',
    '-kernel',
    spec.kernelPath,
    '-initrd',
    spec.initrdPath,
    '-append',
    kernelCommandLine(spec.kernelArgs, accel, input.tscKhz),
    '-chardev',
    `file,id=console,path=${e(spec.consoleLogPath)},append=on`,
    '-serial',
    'chardev:console',
    '-drive',
    `file=${e(spec.baseDiskPath)},format=raw,if=none,id=base,readonly=on`,
    '-device',
    'virtio-blk-device,drive=base',
    ...(input.snapshot?.incoming ? LAYER_FDS.flatMap((fd) => ['-add-fd', `fd=${fd},set=1`]) : []),
    '-drive',
    `file=${input.snapshot?.incoming ? '/dev/fdset/1' : e(spec.layerDiskPath)},format=raw,if=none,id=layer,discard=unmap,detect-zeroes=unmap`,
    '-device',
    'virtio-blk-device,drive=layer',
  ];
  if (spec.tapName !== '') {
    args.push(
      '-netdev',
      `tap,id=net0,ifname=${e(spec.tapName)},script=no,downscript=no`,
      '-device',
      `virtio-net-device,netdev=net0,mac=${spec.mac}`,
    );
  } else if (input.snapshot) {
    // The template has no network, but the same NIC as the seats restored from it (which set their MAC).
    args.push('-device', `virtio-net-device,mac=${spec.mac}`);
  }
  if (input.snapshot) {
    const { memoryPath, share, incoming } = input.snapshot;
    args.push(
      '-object',
      `memory-backend-file,id=ram,size=${spec.memoryMb}M,mem-path=${e(memoryPath)},share=${share ? 'on' : 'off'}`,
      '-device',
      'virtio-serial-device',
      '-chardev',
      `socket,id=identity,path=${e(identitySocketPath(spec.runDir))},server=on,wait=off`,
      '-device',
      `virtserialport,chardev=identity,name=${IDENTITY_PORT_NAME}`,
    );
    if (incoming) args.push('-incoming', 'defer');
  }
  args.push('-qmp', `unix:${e(qmpSocketPath(spec.runDir))},server=on,wait=off`, '-pidfile', pidFilePath(spec.runDir));
  if (input.paused) args.push('-S');
  if (input.runAs !== undefined) args.push('-sandbox', 'on,obsolete=deny,resourcecontrol=deny', '-runas', input.runAs);
  if (input.daemonize ?? true) args.push('-daemonize');
  return args;
}
