// Pure construction of the QEMU command line for one VM (no I/O): the driver and the tests share
// it, and an agent that restarts derives the same socket and pid file paths from the same spec.
import { join } from 'node:path';
import type { VmLaunchSpec } from '../../vms/ports.ts';

export type Acceleration = 'kvm' | 'tcg';

export const QMP_SOCKET_NAME = 'qmp.sock';
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
}

export function buildQemuArgs(input: QemuCommandInput): string[] {
  const { spec, accel } = input;
  const e = escapeOptionValue;
  const args = [
    '-name',
    `guest=${e(spec.id)}`,
    '-machine',
    'microvm,acpi=on',
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
    '-drive',
    `file=${e(spec.layerDiskPath)},format=raw,if=none,id=layer,discard=unmap,detect-zeroes=unmap`,
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
  }
  args.push('-qmp', `unix:${e(qmpSocketPath(spec.runDir))},server=on,wait=off`, '-pidfile', pidFilePath(spec.runDir));
  if (input.paused) args.push('-S');
  if (input.runAs !== undefined) args.push('-sandbox', 'on,obsolete=deny,resourcecontrol=deny', '-runas', input.runAs);
  if (input.daemonize ?? true) args.push('-daemonize');
  return args;
}
