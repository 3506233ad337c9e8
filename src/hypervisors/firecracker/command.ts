// Pure construction of the VMM command line: `firecracker` run directly, or through Firecracker's
// `jailer` (docs/jailer.md). No I/O here; the driver and the tests share these functions, and an agent
// that restarts computes the same socket path and jail path again from the same VM id.
import { createHash } from 'node:crypto';
import { basename, isAbsolute, join, posix } from 'node:path';

/** Name of the API socket, in the VM's run directory (or at the root of its jail). */
export const API_SOCKET_NAME = 'firecracker.sock';

/** sun_path holds 108 bytes including the terminating NUL. */
export const MAX_SOCKET_PATH_BYTES = 107;

/** The jailer's default `--chroot-base-dir`. */
export const DEFAULT_CHROOT_BASE_DIR = '/srv/jailer';

/** Firecracker and the jailer accept ids of 1..64 ASCII alphanumerics and hyphens. */
const VALID_INSTANCE_ID = /^[A-Za-z0-9-]{1,64}$/;

/**
 * Maps the lifecycle's VM id (e.g. `my-test.1`) to an id Firecracker accepts: Firecracker panics
 * on anything but alphanumerics and `-` (at most 64). A valid id is kept as is; otherwise invalid
 * runs become `-` and a short hash of the original keeps distinct VMs distinct
 * (`my-test.1` -> `my-test-1-<8 hex>`). Deterministic, so a restarted agent finds the same jail.
 * `maxLength` (9..64) shortens longer ids the same way (readable prefix + hash).
 */
export function firecrackerInstanceId(vmId: string, maxLength = 64): string {
  if (!Number.isInteger(maxLength) || maxLength < 9 || maxLength > 64) throw new RangeError(`maxLength must be in 9..64, got ${maxLength}`);
  if (VALID_INSTANCE_ID.test(vmId) && vmId.length <= maxLength) return vmId;
  const hash = createHash('sha256').update(vmId).digest('hex').slice(0, 8);
  const readable = vmId
    .replace(/[^A-Za-z0-9-]+/g, '-')
    .replace(/^-+|-+$/g, '')
    .slice(0, maxLength - hash.length - 1)
    .replace(/-+$/, '');
  return readable ? `${readable}-${hash}` : hash;
}

/**
 * The `--id` of a jailed VM: the API socket ends up at
 * `<chroot_base>/<exec name>/<id>/root/firecracker.sock`, so the id is kept short enough for that
 * to fit in a unix socket address.
 */
export function jailedInstanceId(vmId: string, chrootBaseDir: string, execName: string): string {
  if (!isAbsolute(chrootBaseDir)) throw new Error(`chrootBaseDir must be absolute, got "${chrootBaseDir}"`);
  const fixedBytes = Buffer.byteLength(join(chrootBaseDir, execName, 'x', 'root', API_SOCKET_NAME)) - 1;
  const idBudget = Math.min(64, MAX_SOCKET_PATH_BYTES - fixedBytes);
  if (idBudget < 9) {
    throw new Error(
      `chrootBaseDir "${chrootBaseDir}" is too long: the jail's API socket path would not fit in ${MAX_SOCKET_PATH_BYTES} bytes`,
    );
  }
  return firecrackerInstanceId(vmId, idBudget);
}

/**
 * How to run Firecracker through its jailer (docs/jailer.md).
 * `--daemonize` is deliberately absent: it sends the guest console (stdout) to /dev/null, and the
 * jailer refuses it when it is a process-group leader, which a detached spawn always is.
 */
export interface JailerOptions {
  /** Absolute path of the `jailer` binary. */
  readonly jailerBin: string;
  /** Unprivileged uid/gid Firecracker runs as (`--uid`, `--gid`); one pair per VM is recommended. */
  readonly uid: number;
  readonly gid: number;
  /** Where jails are built (`--chroot-base-dir`); the jailer's default is /srv/jailer. */
  readonly chrootBaseDir?: string;
  /** cgroup hierarchy to use (`--cgroup-version`); the jailer's default is 1. */
  readonly cgroupVersion?: 1 | 2;
  /** Relative parent cgroup for the VM's cgroup (`--parent-cgroup`); default the exec file name. */
  readonly parentCgroup?: string;
  /**
   * cgroup files the jailer writes, e.g. `{ 'cpu.max': '200000 100000' }` (`--cgroup file=value`),
   * in this order (it matters on cgroup v1: memory.limit_in_bytes before memory.memsw.limit_in_bytes).
   */
  readonly cgroups?: Readonly<Record<string, string>>;
  /** Network namespace handle to join, e.g. `/var/run/netns/clarateach` (`--netns`). */
  readonly netns?: string;
  /** `--resource-limit fsize=...` / `no-file=...`. */
  readonly resourceLimits?: { readonly fsize?: number; readonly noFile?: number };
  /**
   * `--new-pid-ns`: the jailer clones Firecracker into a new pid namespace and exits; the VMM's
   * pid must then be read from `jail.pidFile`.
   */
  readonly newPidNs?: boolean;
}

export interface VmmCommandInput {
  /** The firecracker binary (a PATH name is fine without the jailer; absolute with it). */
  readonly firecrackerBin: string;
  /** The lifecycle's VM id (VmLaunchSpec.id). */
  readonly vmId: string;
  /** The VM's private directory (VmLaunchSpec.runDir): holds the API socket without the jailer. */
  readonly runDir: string;
  readonly jailer?: JailerOptions;
}

export interface JailLayout {
  /** `--chroot-base-dir`. */
  readonly chrootBaseDir: string;
  /** `<chroot_base>/<exec_file_name>/<id>`: everything of this VM's jail; removed on stop. */
  readonly jailDir: string;
  /** `<chroot_base>/<exec_file_name>/<id>/root`: `/` as the jailed Firecracker sees it. */
  readonly chrootDir: string;
  /** The API socket path passed to Firecracker, inside the jail. */
  readonly apiSocketInJail: string;
  /** With `newPidNs`: file in which the jailer records Firecracker's pid. */
  readonly pidFile?: string;
}

export interface VmmCommand {
  readonly file: string;
  readonly args: readonly string[];
  /** The `--id` Firecracker runs with. */
  readonly instanceId: string;
  /** Where the API socket appears on the host. */
  readonly apiSocketPath: string;
  /**
   * Present when running jailed. Every path given to the API (kernel, initrd, disks) is then
   * resolved inside `chrootDir`, so those files must be hard-linked (or bind-mounted) there first.
   */
  readonly jail?: JailLayout;
}

const CGROUP_FILE = /^[a-z0-9_]+\.[a-z0-9_.]+$/;

function requireId(name: string, value: number): string {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_fffe) {
    throw new Error(`jailer ${name} must be an integer in 0..4294967294, got ${value}`);
  }
  return String(value);
}

function requireLimit(name: string, value: number): string {
  if (!Number.isSafeInteger(value) || value < 0) throw new Error(`jailer ${name} limit must be a non-negative integer, got ${value}`);
  return String(value);
}

/** The jailer's flags that confine the VMM beyond its ids and chroot: cgroup, netns, rlimits, pid namespace. */
function confinementFlags(jailer: JailerOptions): string[] {
  const flags: string[] = [];
  if (jailer.cgroupVersion !== undefined) flags.push('--cgroup-version', String(jailer.cgroupVersion));
  if (jailer.parentCgroup !== undefined) {
    const parent = jailer.parentCgroup;
    if (parent === '' || isAbsolute(parent) || parent.split('/').includes('..')) {
      throw new Error(`parentCgroup must be a relative path without "..", got "${parent}"`);
    }
    flags.push('--parent-cgroup', parent);
  }
  for (const [file, value] of Object.entries(jailer.cgroups ?? {})) {
    if (!CGROUP_FILE.test(file)) throw new Error(`invalid cgroup file name "${file}"`);
    if (value === '' || /[\n=]/.test(value)) throw new Error(`invalid value for cgroup ${file}: "${value}"`);
    flags.push('--cgroup', `${file}=${value}`);
  }
  if (jailer.netns !== undefined) {
    if (!isAbsolute(jailer.netns)) throw new Error(`netns must be the absolute path of a namespace handle, got "${jailer.netns}"`);
    flags.push('--netns', jailer.netns);
  }
  const limits = jailer.resourceLimits ?? {};
  if (limits.fsize !== undefined) flags.push('--resource-limit', `fsize=${requireLimit('fsize', limits.fsize)}`);
  if (limits.noFile !== undefined) flags.push('--resource-limit', `no-file=${requireLimit('no-file', limits.noFile)}`);
  if (jailer.newPidNs) flags.push('--new-pid-ns');
  return flags;
}

function jailerCommand(input: VmmCommandInput, jailer: JailerOptions): VmmCommand {
  const execFile = input.firecrackerBin;
  if (!isAbsolute(execFile)) throw new Error(`the jailer needs an absolute firecracker path, got "${execFile}"`);
  const execName = basename(execFile);
  if (!execName.includes('firecracker')) {
    throw new Error(`the jailer only runs files whose name contains "firecracker", got "${execName}"`);
  }
  if (!isAbsolute(jailer.jailerBin)) throw new Error(`jailerBin must be absolute, got "${jailer.jailerBin}"`);
  const chrootBase = jailer.chrootBaseDir ?? DEFAULT_CHROOT_BASE_DIR;
  const instanceId = jailedInstanceId(input.vmId, chrootBase, execName);

  const args: string[] = [
    '--id',
    instanceId,
    '--exec-file',
    execFile,
    '--uid',
    requireId('uid', jailer.uid),
    '--gid',
    requireId('gid', jailer.gid),
    '--chroot-base-dir',
    chrootBase,
  ];
  args.push(...confinementFlags(jailer));

  // Everything after `--` goes to Firecracker; the jailer adds `--id` itself.
  const apiSocketInJail = posix.join('/', API_SOCKET_NAME);
  args.push('--', '--api-sock', apiSocketInJail);

  const jailDir = join(chrootBase, execName, instanceId);
  const chrootDir = join(jailDir, 'root');
  return {
    file: jailer.jailerBin,
    args,
    instanceId,
    apiSocketPath: join(chrootDir, apiSocketInJail),
    jail: {
      chrootBaseDir: chrootBase,
      jailDir,
      chrootDir,
      apiSocketInJail,
      ...(jailer.newPidNs ? { pidFile: join(chrootDir, `${execName}.pid`) } : {}),
    },
  };
}

/** The command that starts the VM's VMM, and where its API socket will be. */
export function buildVmmCommand(input: VmmCommandInput): VmmCommand {
  if (!isAbsolute(input.runDir)) throw new Error(`runDir must be absolute, got "${input.runDir}"`);
  if (input.jailer) return jailerCommand(input, input.jailer);
  const instanceId = firecrackerInstanceId(input.vmId);
  const apiSocketPath = join(input.runDir, API_SOCKET_NAME);
  return {
    file: input.firecrackerBin,
    args: ['--api-sock', apiSocketPath, '--id', instanceId],
    instanceId,
    apiSocketPath,
  };
}
