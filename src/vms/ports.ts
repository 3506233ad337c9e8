// What the VM lifecycle needs from the world, declared by the lifecycle itself. Adapters implement
// these (hypervisors/, network/, disks/, store/, proxy/guest.ts, host/process.ts); the composition
// root (cli/agent.ts) wires them. The lifecycle imports no adapter.
import type { StartRecord, VmRecord } from './model.ts';

// ---- hypervisor -------------------------------------------------------------------------------

/** Everything a VMM needs to boot one seat's guest. All paths are absolute. */
export interface VmLaunchSpec {
  /** Stable, filesystem-safe id of the VM, e.g. `my-test.1`. */
  readonly id: string;
  readonly vcpus: number;
  readonly memoryMb: number;
  readonly kernelPath: string;
  readonly initrdPath: string;
  /** Kernel command line the lifecycle computed (network, console); drivers may append their own. */
  readonly kernelArgs: string;
  /** Shared read-only base image, attached read-only as the first drive. */
  readonly baseDiskPath: string;
  /** This VM's own writable layer, attached read-write as the second drive. */
  readonly layerDiskPath: string;
  readonly tapName: string;
  readonly mac: string;
  /** Private directory of this VM: sockets, pid file, console log live here. */
  readonly runDir: string;
  /** Where the guest's serial console is appended (the file is opened with O_APPEND). */
  readonly consoleLogPath: string;
}

/** What the agent keeps about a started VMM so that it can find it again after a restart. */
export interface VmmProcess {
  readonly pid: number;
  /** Process start time (clock ticks since boot, from /proc/PID/stat), guards against pid reuse. */
  readonly startTime: number;
}

export interface HypervisorInfo {
  readonly name: 'qemu' | 'firecracker';
  /** `kvm` when hardware virtualization is used, `tcg` for QEMU's software emulation. */
  readonly acceleration: 'kvm' | 'tcg';
}

export interface VmmOwner {
  readonly uid: number;
  readonly gid: number;
}

/** What a sweep removed, by kind (`processes`, `taps`, `directories`, `cgroups`, `jails`, ...). */
export type ReclaimCounts = Readonly<Record<string, number>>;

export interface HypervisorDriver {
  readonly info: HypervisorInfo;
  /**
   * Starts a detached VMM (it must outlive the agent) and resolves once the VMM has started the
   * guest. Rejects with a readable reason otherwise, leaving no process behind.
   */
  start(spec: VmLaunchSpec): Promise<VmmProcess>;
  /** True while this exact VMM process (pid and start time) is alive. */
  isAlive(proc: VmmProcess): boolean;
  /**
   * Asks the guest to power off, waits up to `gracefulMs`, then kills the VMM. Resolves once the
   * process is gone. Safe to call for a process that has already exited.
   */
  stop(spec: VmLaunchSpec, proc: VmmProcess, gracefulMs: number): Promise<void>;
  /**
   * The uid/gid this VM's VMM runs as when it is not root. Resources the VMM opens (its TAP) are
   * given to that user alone, so no other VM's VMM can attach to them.
   */
  vmmOwner?(spec: VmLaunchSpec): Promise<VmmOwner | undefined>;
  /** Removes what the driver keeps per VM (cgroups, jails) for every VM id not in `keep`. */
  reclaim?(keep: ReadonlySet<string>): Promise<ReclaimCounts>;
  /** Snapshot start, where the driver supports it (both methods or neither). */
  readonly snapshots?: SnapshotDriver;
}

// ---- snapshots --------------------------------------------------------------------------------

/** Which snapshot a seat can start from: the same build, vCPUs and memory as the saved guest. */
export interface SnapshotKey {
  readonly template: string;
  readonly buildId: string;
  readonly vcpus: number;
  readonly memoryMb: number;
}

/** The files of one snapshot, in its own directory. */
export interface SnapshotFiles {
  readonly dir: string;
  /** The guest's memory (mapped privately by every seat restored from it, where the VMM can). */
  readonly memoryPath: string;
  /** The VMM's device state. */
  readonly statePath: string;
  /** The writable layer as the saved guest had it mounted: each seat starts from a copy. */
  readonly layerPath: string;
}

/**
 * Who a restored guest is. It learns this over the host-to-guest channel right after the restore,
 * before anything can reach it: address, MAC, host name, fresh entropy and the time.
 */
export interface GuestIdentity {
  readonly ip: string;
  readonly prefixLength: number;
  readonly gateway: string;
  readonly mac: string;
  readonly hostname: string;
  readonly dns: readonly string[];
  /** 64 random bytes, hex: the guest mixes them into its RNG and reseeds it, and derives its machine id. */
  readonly seedHex: string;
  readonly epochMs: number;
}

export interface SnapshotDriver {
  /**
   * What a snapshot made by this driver depends on beyond its key (VMM binary and version, device
   * layout): a snapshot recorded with another value is stale.
   */
  compatibility(): Promise<string>;
  /**
   * Boots `spec` (no TAP; the guest's kernel arguments ask it to wait for an identity), waits until
   * the guest says it is ready, and saves it into `files`. Leaves no process behind either way.
   */
  save(spec: VmLaunchSpec, files: SnapshotFiles, timeoutMs: number): Promise<void>;
  /**
   * Starts `spec`'s VMM from `files` and hands the guest `identity`; resolves once the guest runs
   * with it. Rejects with the reason otherwise, leaving no process behind (the caller boots cold).
   */
  restore(spec: VmLaunchSpec, files: SnapshotFiles, identity: GuestIdentity): Promise<VmmProcess>;
}

/** A snapshot ready to start seats from, or why there is none. */
export type SnapshotLookup = { readonly files: SnapshotFiles } | { readonly missing: string };

export interface SnapshotInfo {
  readonly template: string;
  readonly buildId: string;
  readonly vcpus: number;
  readonly memoryMb: number;
  readonly state: 'ready' | 'making' | 'failed';
  readonly createdAt: string | null;
  readonly error: string | null;
}

/** The agent's snapshots, one per key, made in the background. */
export interface SnapshotPort {
  find(key: SnapshotKey): Promise<SnapshotLookup>;
  /** Starts making the key's snapshot in the background unless it exists or is being made. */
  request(key: SnapshotKey, build: ImageBuild): void;
  /** Removes the snapshots of builds that are not in `keepBuilds` (`template/buildId`). */
  prune(keepBuilds: ReadonlySet<string>): Promise<void>;
  list(): SnapshotInfo[];
}

// ---- processes --------------------------------------------------------------------------------

/** The host's processes, as far as finding and ending VMMs is concerned. */
export interface ProcessPort {
  /** Processes whose command line names a path under `dir` (VMMs started for a VM directory). */
  findUnder(dir: string): Promise<VmmProcess[]>;
  isAlive(proc: VmmProcess): boolean;
  /** SIGKILL, then waits until it is gone. */
  kill(proc: VmmProcess): Promise<void>;
}

// ---- network ----------------------------------------------------------------------------------

/** A VM as the network sees it. */
export interface VmEndpoint {
  readonly tap: string;
  readonly mac: string;
  readonly ip: string;
}

/** How a seat gets its address, and what the address implies (MAC, TAP name). */
export interface Addressing {
  /** Picks an address for the seat given the addresses in use; undefined when none is left. */
  allocate(seatId: number, used: ReadonlySet<number>): number | undefined;
  ipText(ip: number): string;
  mac(ip: number): string;
  tapName(ip: number): string;
}

/** The guest side of the VMs' subnet, as the guest kernel's `ip=` argument needs it. */
export interface GuestSubnet {
  /** e.g. `192.168.100.0/24`. */
  readonly text: string;
  readonly gateway: string;
  readonly netmask: string;
}

export interface NetworkPort {
  readonly addressing: Addressing;
  readonly subnet: GuestSubnet;
  /** The bridge with the gateway address. Idempotent. */
  ensureBridge(): Promise<void>;
  /** TAP on the bridge (isolated port), neighbor entry pinned, guard element added. Idempotent. */
  attach(vm: VmEndpoint, owner?: VmmOwner): Promise<void>;
  /** Undoes attach. Idempotent. */
  detach(vm: VmEndpoint): Promise<void>;
  /** TAPs this agent made (by their name pattern), whoever owns them now. */
  listTaps(): Promise<string[]>;
  deleteTap(name: string): Promise<void>;
}

// ---- disks and images -------------------------------------------------------------------------

export interface DiskPort {
  /** The VM's writable layer at `path`, made unless it exists; a crash leaves no half-made disk. */
  ensureLayer(path: string, sizeMb: number): Promise<void>;
  /** A copy of `source` at `path` (holes kept), made unless it exists; a crash leaves no half-made disk. */
  copyLayer(source: string, path: string): Promise<void>;
  /** Begins making copies of `source` ahead, where the adapter keeps spares (a snapshot's layer). */
  prepareCopies?(source: string): Promise<void>;
}

/** Absolute paths of the boot images of one build. */
export interface ImagePaths {
  readonly kernel: string;
  readonly initrd: string;
  readonly rootfs: string;
}

/** One immutable build of a template: what a VM is created from and booted again from. */
export interface ImageBuild {
  readonly template: string;
  readonly buildId: string;
  readonly paths: ImagePaths;
}

export interface TemplateBuildInfo {
  readonly id: string;
  readonly builtAt: string;
  readonly current: boolean;
}

export interface TemplateInfo {
  readonly name: string;
  readonly currentBuild: string | null;
  readonly builds: readonly TemplateBuildInfo[];
}

/**
 * The templates (named images) and their builds. A template's current build is whatever its image
 * build last wrote; the catalog keeps each build it hands out unchanged until no VM uses it.
 */
export interface ImageCatalog {
  /** The template's current build; throws VmError template_not_found when it has none. */
  current(template: string): Promise<ImageBuild>;
  /** The files of a build handed out before (they may be gone: the boot plan's image check says so). */
  paths(template: string, buildId: string): ImagePaths;
  /**
   * Removes the builds that are neither a template's current one nor in use (`inUse()`, asked
   * again right before each removal, gives `template/buildId` of every VM); returns them.
   */
  prune(inUse: () => ReadonlySet<string>): Promise<string[]>;
  list(): Promise<TemplateInfo[]>;
}

// ---- store ------------------------------------------------------------------------------------

export interface Reservation {
  readonly workshopId: string;
  readonly seatId: number;
  readonly vcpus: number;
  readonly memoryMb: number;
  readonly hypervisor: string;
  readonly template: string;
  readonly buildId: string;
}

export type ReserveResult =
  | { readonly ok: true; readonly vm: VmRecord }
  | { readonly ok: false; readonly reason: 'exists' | 'at_capacity' | 'no_address' }
  | { readonly ok: false; readonly reason: 'memory'; readonly committedMb: number };

export interface ReserveLimits {
  readonly capacity: number;
  readonly memoryBudgetMb: number;
}

/** The VMs' records. Every change is durable once the call returns. */
export interface VmRepository {
  /** Atomically checks seat and capacity, allocates an address and records the VM as `creating`. */
  reserve(request: Reservation, limits: ReserveLimits, addressing: Addressing, now: number): ReserveResult;
  get(workshopId: string, seatId: number): VmRecord | undefined;
  list(workshopId?: string): VmRecord[];
  count(): number;
  markRunning(workshopId: string, seatId: number, pid: number, pidStartTime: number, now: number): void;
  markRestarted(workshopId: string, seatId: number, pid: number, pidStartTime: number): void;
  /** How the create's boot went (start mode, reason, step timings). */
  recordStart(workshopId: string, seatId: number, start: StartRecord): void;
  markReady(workshopId: string, seatId: number, now: number): void;
  /**
   * `undoOnStart`: a create that failed and could not remove what it made; the next start
   * removes the VM (as DELETE would) instead of booting it.
   */
  markFailed(workshopId: string, seatId: number, error: string, undoOnStart?: boolean): void;
  /**
   * A stop is under way: `stopped`, its VMM still recorded. An agent that dies before the stop
   * ends finishes it on its next start instead of booting the VM again.
   */
  markStopRequested(workshopId: string, seatId: number): void;
  /** A stop that could not end its VMM: `running` again, with the VMM it has. */
  cancelStop(workshopId: string, seatId: number): void;
  /** Its VMM was stopped on request: no process, not ready; `error` says why a start did not boot it. */
  markStopped(workshopId: string, seatId: number, error: string | null): void;
  /** A start is under way (no VMM yet): running, not ready, as a restart is. */
  markStarting(workshopId: string, seatId: number): void;
  markDeleting(workshopId: string, seatId: number): void;
  remove(workshopId: string, seatId: number): void;
}

// ---- guest and time ---------------------------------------------------------------------------

export interface GuestHealth {
  readonly terminal: boolean;
  readonly files: boolean;
}

/** Asks a guest's services whether they answer. Never rejects. */
export type GuestProbe = (ip: string) => Promise<GuestHealth>;

export interface Clock {
  /** Epoch milliseconds. */
  now(): number;
}
