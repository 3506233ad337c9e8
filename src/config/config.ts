// Agent configuration: environment variables, each overridable by a matching --flag.
// A bad value stops start-up with one line naming the variable.
import { hostname } from 'node:os';
import { ipToInt, parseCidr, type Cidr } from '../network/cidr.ts';
import { parseEgress, type EgressPolicy } from '../network/firewall.ts';

export interface AgentConfig {
  readonly port: number;
  readonly host: string;
  readonly agentToken: string | undefined;
  readonly workspaceTokenSecret: string | undefined;
  readonly workspaceTokenTtlS: number;
  readonly workerId: string;
  readonly capacity: number;
  readonly imagesDir: string;
  readonly stateDir: string;
  readonly bridgeName: string;
  readonly bridgeCidr: Cidr;
  readonly egress: EgressPolicy;
  readonly vmDns: string | undefined;
  readonly hypervisor: 'auto' | 'firecracker' | 'qemu';
  readonly firecrackerBin: string;
  readonly jailerBin: string | undefined;
  readonly jailChrootBaseDir: string;
  readonly qemuBin: string;
  readonly qemuAccel: 'auto' | 'kvm' | 'tcg';
  readonly vmVcpus: number;
  readonly vmMemoryMb: number;
  readonly vmMaxVcpus: number;
  readonly vmMaxMemoryMb: number;
  readonly vmDiskMb: number;
  readonly memoryOvercommit: number;
  /** The seats' share, as a whole, of a contended CPU against the host's other work (cgroup v2 cpu.weight units). */
  readonly seatsCpuWeight: number;
  /** Seats restore from a snapshot of their template build (made in the background) instead of booting. */
  readonly snapshotStart: boolean;
  /** Large downloads go from the guest's socket to the client's in the kernel (eBPF sockmap). */
  readonly kernelRelay: boolean;
  readonly logLevel: string;
}

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
    this.name = 'ConfigError';
  }
}

interface Setting {
  readonly env: string;
  readonly flag: string;
  readonly help: string;
  readonly fallback: () => string | undefined;
}

export const SETTINGS = {
  port: { env: 'PORT', flag: '--port', help: 'TCP port of the REST API', fallback: () => '9090' },
  host: { env: 'HOST', flag: '--host', help: 'address to bind (non-loopback needs AGENT_TOKEN)', fallback: () => '127.0.0.1' },
  agentToken: {
    env: 'AGENT_TOKEN',
    flag: '--agent-token',
    help: 'bearer token required by every endpoint but /health',
    fallback: () => undefined,
  },
  workspaceTokenSecret: {
    env: 'WORKSPACE_TOKEN_SECRET',
    flag: '--workspace-token-secret',
    help: 'secret signing learner tokens (32+ characters); unset: no learner tokens',
    fallback: () => undefined,
  },
  workspaceTokenTtlS: {
    env: 'WORKSPACE_TOKEN_TTL_S',
    flag: '--workspace-token-ttl-s',
    help: 'default lifetime of a learner token (s)',
    fallback: () => '3600',
  },
  workerId: { env: 'WORKER_ID', flag: '--worker-id', help: 'name reported by /health and /info', fallback: () => hostname() },
  capacity: { env: 'CAPACITY', flag: '--capacity', help: 'most VMs this worker runs at once', fallback: () => '50' },
  imagesDir: {
    env: 'IMAGES_DIR',
    flag: '--images-dir',
    help: 'kernel, initrd and base rootfs',
    fallback: () => '/var/lib/clarateach/images',
  },
  stateDir: {
    env: 'STATE_DIR',
    flag: '--state-dir',
    help: 'SQLite store, per-VM disks, sockets and logs',
    fallback: () => '/var/lib/clarateach/state',
  },
  bridgeName: { env: 'BRIDGE_NAME', flag: '--bridge-name', help: 'Linux bridge the VMs are attached to', fallback: () => 'clarateach0' },
  bridgeCidr: { env: 'BRIDGE_CIDR', flag: '--bridge-cidr', help: 'bridge address and VM subnet', fallback: () => '192.168.100.1/24' },
  egress: { env: 'EGRESS', flag: '--egress', help: 'nat | none | allow-list CIDR[:PORT[-PORT]],...', fallback: () => 'nat' },
  vmDns: { env: 'VM_DNS', flag: '--vm-dns', help: 'DNS server the guests use ("none": none)', fallback: () => '1.1.1.1' },
  hypervisor: { env: 'HYPERVISOR', flag: '--hypervisor', help: 'auto | firecracker | qemu', fallback: () => 'auto' },
  firecrackerBin: {
    env: 'FIRECRACKER_BIN',
    flag: '--firecracker-bin',
    help: 'path of the firecracker binary',
    fallback: () => 'firecracker',
  },
  jailerBin: {
    env: 'JAILER_BIN',
    flag: '--jailer-bin',
    help: "Firecracker's jailer: each VMM chrooted, as its own uid, in its cgroup",
    fallback: () => undefined,
  },
  jailChrootBaseDir: {
    env: 'JAIL_CHROOT_BASE_DIR',
    flag: '--jail-chroot-base-dir',
    help: 'jails (same filesystem as IMAGES_DIR and STATE_DIR)',
    fallback: () => '/srv/jailer',
  },
  qemuBin: { env: 'QEMU_BIN', flag: '--qemu-bin', help: 'path of qemu-system-x86_64', fallback: () => 'qemu-system-x86_64' },
  qemuAccel: { env: 'QEMU_ACCEL', flag: '--qemu-accel', help: 'auto (KVM if a trial boot works) | kvm | tcg', fallback: () => 'auto' },
  vmVcpus: { env: 'VM_VCPUS', flag: '--vm-vcpus', help: 'default vCPUs per VM', fallback: () => '1' },
  vmMemoryMb: { env: 'VM_MEMORY_MB', flag: '--vm-memory-mb', help: 'default memory per VM (MiB)', fallback: () => '512' },
  vmMaxVcpus: { env: 'VM_MAX_VCPUS', flag: '--vm-max-vcpus', help: 'largest vcpus a create may ask for', fallback: () => '8' },
  vmMaxMemoryMb: {
    env: 'VM_MAX_MEMORY_MB',
    flag: '--vm-max-memory-mb',
    help: 'largest memory_mb a create may ask for',
    fallback: () => '8192',
  },
  vmDiskMb: { env: 'VM_DISK_MB', flag: '--vm-disk-mb', help: "size of each VM's writable layer (sparse, MiB)", fallback: () => '10240' },
  memoryOvercommit: {
    env: 'MEMORY_OVERCOMMIT',
    flag: '--memory-overcommit',
    help: 'VM memory may total host memory times this',
    fallback: () => '1.5',
  },
  snapshotStart: {
    env: 'SNAPSHOT_START',
    flag: '--snapshot-start',
    help: 'on: new seats restore from a snapshot of their template (made in the background); off: every seat boots cold',
    fallback: () => 'on',
  },
  seatsCpuWeight: {
    env: 'SEATS_CPU_WEIGHT',
    flag: '--seats-cpu-weight',
    help: "the seats' CPU weight as a whole (1-10000; the host's other cgroups have 100): lower, the agent relays sooner when seats use every cycle, but restores at once take longer",
    fallback: () => '100',
  },
  kernelRelay: {
    env: 'KERNEL_RELAY',
    flag: '--kernel-relay',
    help: 'on: downloads of 1 MiB or more are relayed in the kernel where it allows (eBPF sockmap); off: all through the agent',
    fallback: () => 'on',
  },
  logLevel: { env: 'LOG_LEVEL', flag: '--log-level', help: 'pino log level', fallback: () => 'info' },
} as const satisfies Record<keyof AgentConfig, Setting>;

type Source = (setting: Setting) => string | undefined;

function onOff(setting: Setting, raw: string): boolean {
  if (raw === 'on') return true;
  if (raw === 'off') return false;
  throw new ConfigError(setting.env, `must be "on" or "off", got "${raw}"`);
}

function integer(setting: Setting, raw: string, min: number, max: number): number {
  if (!/^\d+$/.test(raw)) throw new ConfigError(setting.env, `must be a whole number, got "${raw}"`);
  const value = Number(raw);
  if (value < min || value > max) throw new ConfigError(setting.env, `must be between ${min} and ${max}, got ${value}`);
  return value;
}

function ratio(setting: Setting, raw: string): number {
  const value = Number(raw);
  if (!/^\d+(\.\d+)?$/.test(raw) || value < 0.1 || value > 100) {
    throw new ConfigError(setting.env, `must be a number from 0.1 to 100, got "${raw}"`);
  }
  return value;
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Reads the configuration from flags (`--port 1234` or `--port=1234`) over environment variables. */
export function loadConfig(env: NodeJS.ProcessEnv, argv: readonly string[] = []): AgentConfig {
  const flags = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (!arg.startsWith('--')) throw new ConfigError('arguments', `unexpected argument "${arg}"`);
    const eq = arg.indexOf('=');
    if (eq > 0) {
      flags.set(arg.slice(0, eq), arg.slice(eq + 1));
      continue;
    }
    const value = argv[i + 1];
    if (value === undefined) throw new ConfigError(arg, 'needs a value');
    flags.set(arg, value);
    i++;
  }
  const known = new Set<string>(Object.values(SETTINGS).map((s) => s.flag));
  for (const flag of flags.keys()) {
    if (!known.has(flag)) throw new ConfigError(flag, 'unknown flag (see `clarateach agent --help`)');
  }
  const source: Source = (s) => {
    const value = flags.get(s.flag) ?? env[s.env];
    return value === undefined || value === '' ? s.fallback() : value;
  };
  const text = (s: Setting): string => {
    const value = source(s);
    if (value === undefined) throw new ConfigError(s.env, 'is required');
    return value;
  };

  const agentToken = source(SETTINGS.agentToken);
  if (agentToken !== undefined && agentToken.length < 8) {
    throw new ConfigError('AGENT_TOKEN', 'must be at least 8 characters');
  }
  const workspaceTokenSecret = source(SETTINGS.workspaceTokenSecret);
  if (workspaceTokenSecret !== undefined && workspaceTokenSecret.length < 32) {
    throw new ConfigError('WORKSPACE_TOKEN_SECRET', 'must be at least 32 characters');
  }
  const host = text(SETTINGS.host);
  if (agentToken === undefined && !isLoopback(host)) {
    throw new ConfigError('HOST', `"${host}" is not a loopback address; set AGENT_TOKEN to expose the agent`);
  }
  const hypervisor = text(SETTINGS.hypervisor);
  if (hypervisor !== 'auto' && hypervisor !== 'firecracker' && hypervisor !== 'qemu') {
    throw new ConfigError('HYPERVISOR', `must be auto, firecracker or qemu, got "${hypervisor}"`);
  }
  const qemuAccel = text(SETTINGS.qemuAccel);
  if (qemuAccel !== 'auto' && qemuAccel !== 'kvm' && qemuAccel !== 'tcg') {
    throw new ConfigError('QEMU_ACCEL', `must be auto, kvm or tcg, got "${qemuAccel}"`);
  }
  const bridgeName = text(SETTINGS.bridgeName);
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(bridgeName)) {
    throw new ConfigError('BRIDGE_NAME', 'must be 1-15 characters of letters, digits, "_", "-" or "."');
  }
  let bridgeCidr: Cidr;
  try {
    bridgeCidr = parseCidr(text(SETTINGS.bridgeCidr));
  } catch (error) {
    throw new ConfigError('BRIDGE_CIDR', (error as Error).message);
  }
  if (bridgeCidr.prefix > 27) throw new ConfigError('BRIDGE_CIDR', 'the subnet must be /27 or larger');
  let egress: EgressPolicy;
  try {
    egress = parseEgress(text(SETTINGS.egress));
  } catch (error) {
    throw new ConfigError('EGRESS', (error as Error).message);
  }
  const dnsText = text(SETTINGS.vmDns);
  let vmDns: string | undefined;
  if (dnsText !== 'none') {
    try {
      ipToInt(dnsText);
    } catch {
      throw new ConfigError('VM_DNS', `must be an IPv4 address or "none", got "${dnsText}"`);
    }
    vmDns = dnsText;
  }
  const vmMaxVcpus = integer(SETTINGS.vmMaxVcpus, text(SETTINGS.vmMaxVcpus), 1, 64);
  const vmMaxMemoryMb = integer(SETTINGS.vmMaxMemoryMb, text(SETTINGS.vmMaxMemoryMb), 128, 1_048_576);
  const workerId = text(SETTINGS.workerId);
  if (!/^[\w.-]{1,128}$/.test(workerId)) throw new ConfigError('WORKER_ID', 'must be 1-128 of letters, digits, "_", "-" or "."');
  const dir = (s: Setting): string => {
    const value = text(s);
    if (!value.startsWith('/')) throw new ConfigError(s.env, `must be an absolute path, got "${value}"`);
    return value.replace(/\/+$/, '') || '/';
  };
  const stateDir = dir(SETTINGS.stateDir);
  // A unix socket path has 107 bytes. VMM sockets live at STATE_DIR/vms/<10-char name>/<socket>;
  // the longest is a snapshot's template VMM's, below STATE_DIR/snapshots (src/snapshots/store.ts).
  const longestSocket = [`${stateDir}/vms/ct00000000/firecracker.sock`, `${stateDir}/snapshots/.m-00000000/r/identity.sock`];
  if (longestSocket.some((path) => path.length > 107)) {
    throw new ConfigError('STATE_DIR', 'is too long for unix socket paths below it (keep it under 70 characters)');
  }
  return {
    port: integer(SETTINGS.port, text(SETTINGS.port), 1, 65535),
    host,
    agentToken,
    workspaceTokenSecret,
    workspaceTokenTtlS: integer(SETTINGS.workspaceTokenTtlS, text(SETTINGS.workspaceTokenTtlS), 30, 86_400),
    workerId,
    capacity: integer(SETTINGS.capacity, text(SETTINGS.capacity), 1, 10_000),
    imagesDir: dir(SETTINGS.imagesDir),
    stateDir,
    bridgeName,
    bridgeCidr,
    egress,
    vmDns,
    hypervisor,
    firecrackerBin: text(SETTINGS.firecrackerBin),
    jailerBin: source(SETTINGS.jailerBin),
    jailChrootBaseDir: dir(SETTINGS.jailChrootBaseDir),
    qemuBin: text(SETTINGS.qemuBin),
    qemuAccel,
    vmVcpus: integer(SETTINGS.vmVcpus, text(SETTINGS.vmVcpus), 1, vmMaxVcpus),
    vmMemoryMb: integer(SETTINGS.vmMemoryMb, text(SETTINGS.vmMemoryMb), 128, vmMaxMemoryMb),
    vmMaxVcpus,
    vmMaxMemoryMb,
    vmDiskMb: integer(SETTINGS.vmDiskMb, text(SETTINGS.vmDiskMb), 256, 1_048_576),
    memoryOvercommit: ratio(SETTINGS.memoryOvercommit, text(SETTINGS.memoryOvercommit)),
    seatsCpuWeight: integer(SETTINGS.seatsCpuWeight, text(SETTINGS.seatsCpuWeight), 1, 10_000),
    snapshotStart: onOff(SETTINGS.snapshotStart, text(SETTINGS.snapshotStart)),
    kernelRelay: onOff(SETTINGS.kernelRelay, text(SETTINGS.kernelRelay)),
    logLevel: text(SETTINGS.logLevel),
  };
}

export function configHelp(): string {
  return Object.values(SETTINGS)
    .map((s) => `  ${s.flag.padEnd(22)} ${s.env.padEnd(18)} ${s.help} (default: ${s.fallback() ?? 'unset'})`)
    .join('\n');
}
