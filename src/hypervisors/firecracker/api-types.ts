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
