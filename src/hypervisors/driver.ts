// The one interface every hypervisor (VMM) adapter implements. The lifecycle code knows nothing
// else about QEMU or Firecracker.

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
  /** Removes what the driver keeps per VM (cgroups) for every VM id not in `keep`. */
  removeOrphans?(keep: ReadonlySet<string>): Promise<void>;
}

export interface VmmOwner {
  readonly uid: number;
  readonly gid: number;
}
