// Request and response bodies of the Firecracker API, as declared in the `definitions` of
// Firecracker's OpenAPI (Swagger 2.0) document (shared/firecracker/firecracker.yaml). Only the
// definitions the driver uses, field for field; optional fields are the ones the spec does not list
// as required. Firecracker rejects unknown fields (its serde structs use deny_unknown_fields), so
// nothing beyond these may be sent.

/** `TokenBucket`. */
export interface TokenBucket {
  readonly size: number;
  readonly refill_time: number;
  readonly one_time_burst?: number;
}

/** `RateLimiter`. */
export interface RateLimiter {
  readonly bandwidth?: TokenBucket;
  readonly ops?: TokenBucket;
}

/** `CpuTemplate` (deprecated upstream, listed for completeness). */
export type CpuTemplate = 'C3' | 'T2' | 'T2S' | 'T2CL' | 'T2A' | 'V1N1' | 'None';

/** `MachineConfiguration`: body of PUT /machine-config (putMachineConfiguration). */
export interface MachineConfiguration {
  /** 1..32 (either 1 or an even number when `smt` is on). */
  readonly vcpu_count: number;
  readonly mem_size_mib: number;
  readonly smt?: boolean;
  readonly track_dirty_pages?: boolean;
  readonly huge_pages?: 'None' | 'Transparent' | '2M';
  readonly cpu_template?: CpuTemplate;
}

/** `BootSource`: body of PUT /boot-source (putGuestBootSource). */
export interface BootSource {
  readonly kernel_image_path: string;
  readonly initrd_path?: string;
  readonly boot_args?: string;
}

/** `Drive`: body of PUT /drives/{drive_id} (putGuestDriveByID), virtio-block flavour. */
export interface Drive {
  /** Must equal the `{drive_id}` of the path; alphanumerics and `_` only. */
  readonly drive_id: string;
  readonly is_root_device: boolean;
  readonly is_read_only?: boolean;
  readonly path_on_host?: string;
  readonly partuuid?: string;
  readonly cache_type?: 'Unsafe' | 'Writeback';
  readonly io_engine?: 'Sync' | 'Async';
  readonly rate_limiter?: RateLimiter;
}

/** `NetworkInterface`: body of PUT /network-interfaces/{iface_id} (putGuestNetworkInterfaceByID). */
export interface NetworkInterface {
  /** Must equal the `{iface_id}` of the path; alphanumerics and `_` only. */
  readonly iface_id: string;
  /** Name of an existing TAP device on the host. */
  readonly host_dev_name: string;
  readonly guest_mac?: string;
  readonly mtu?: number;
  readonly rx_rate_limiter?: RateLimiter;
  readonly tx_rate_limiter?: RateLimiter;
}

export type InstanceActionType = 'FlushMetrics' | 'InstanceStart' | 'SendCtrlAltDel';

/** `InstanceActionInfo`: body of PUT /actions (createSyncAction). */
export interface InstanceActionInfo {
  readonly action_type: InstanceActionType;
}

/** `InstanceInfo`: answer of GET / (describeInstance). */
export interface InstanceInfo {
  readonly app_name: string;
  readonly id: string;
  readonly state: 'Not started' | 'Running' | 'Paused';
  readonly vmm_version: string;
}

/** `Error`: body of every error answer. */
export interface ApiErrorBody {
  readonly fault_message?: string;
}

/** `Vsock`: body of PUT /vsock (putGuestVsock). Pre-boot only; `uds_path` is bound by Firecracker. */
export interface Vsock {
  /** 3 or more (0-2 are reserved; 2 is the host). */
  readonly guest_cid: number;
  /** Host-initiated connections go here; guest-initiated ones to port P reach `<uds_path>_P`. */
  readonly uds_path: string;
}

/** `Vm`: body of PATCH /vm (patchVm). */
export interface Vm {
  readonly state: 'Paused' | 'Resumed';
}

/** `SnapshotCreateParams`: body of PUT /snapshot/create (createSnapshot). The VM must be paused. */
export interface SnapshotCreateParams {
  readonly snapshot_path: string;
  readonly mem_file_path: string;
  readonly snapshot_type?: 'Full' | 'Diff';
}

/** `MemoryBackend`: `File` maps the memory file privately (copy-on-write). */
export interface MemoryBackend {
  readonly backend_type: 'File' | 'Uffd';
  readonly backend_path: string;
}

/** `NetworkOverride` (Firecracker 1.12 and later): another TAP for a saved interface. */
export interface NetworkOverride {
  readonly iface_id: string;
  readonly host_dev_name: string;
}

/** `VsockOverride` (Firecracker 1.16 and later): another UDS for the saved vsock device. */
export interface VsockOverride {
  readonly uds_path: string;
}

/** `SnapshotLoadParams`: body of PUT /snapshot/load (loadSnapshot). Only on a fresh VMM. */
export interface SnapshotLoadParams {
  readonly snapshot_path: string;
  readonly mem_backend?: MemoryBackend;
  /** Deprecated upstream: `mem_backend` instead. */
  readonly mem_file_path?: string;
  readonly track_dirty_pages?: boolean;
  readonly resume_vm?: boolean;
  readonly network_overrides?: readonly NetworkOverride[];
  readonly vsock_override?: VsockOverride;
}
