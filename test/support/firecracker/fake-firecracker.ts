// A stand-in for the `firecracker` binary, for tests on machines without KVM or Firecracker:
//
//   node --import tsx fake-firecracker.ts --api-sock PATH [--id ID]
//
// (fake-firecracker-shim.ts writes a small executable that runs it, to hand to the driver as
// `firecrackerBin`). It serves the API on the unix socket and checks EVERY request against
// Firecracker's OpenAPI document: unknown path, undefined method, body not matching the
// operation's schema (types, required fields, enums, ranges, unknown fields) are answered 400 with
// a `fault_message`, as Firecracker does, and appended to $FAKE_FIRECRACKER_VIOLATIONS_LOG so the
// test that caused them can fail. It also behaves like Firecracker where the driver depends on it:
// pre-boot configuration, files opened when configured, InstanceStart only with a boot source and
// a loadable kernel (ELF or bzImage), console output on stdout, pre-boot-only requests refused
// after the start, exit(0) some time after SendCtrlAltDel. Snapshots: PUT /vsock binds its socket,
// PATCH /vm pauses and resumes, PUT /snapshot/create (paused only) writes a state file of its own
// format and a sparse memory file, PUT /snapshot/load (on a fresh process only) reopens the saved
// drives at their recorded paths, applies `network_overrides` (1.12+) and `vsock_override` (1.16+;
// older versions refuse them as unknown fields, as serde does) and resumes if asked.
// It also plays the guest's side of the identity channel (clarateach-init, await_identity):
// a guest booted with clarateach.identity=wait and a vsock device connects to `<uds_path>_52`, says
// "ready" and waits for a line; the snapshot resets that connection, and a restored guest connects
// again, reads its identity line and answers `identity-ok ...` (or as FAKE_FIRECRACKER_GUEST_IDENTITY says).
//
// Environment:
//   FAKE_FIRECRACKER_VIOLATIONS_LOG     file to append violations to (JSON lines)
//   FAKE_FIRECRACKER_REQUEST_LOG        file to append events and requests to (JSON lines)
//   FAKE_FIRECRACKER_FAIL_INSTANCE_START  refuse InstanceStart with this reason
//   FAKE_FIRECRACKER_IGNORE_CTRL_ALT_DEL  "1": the guest ignores Ctrl-Alt-Del
//   FAKE_FIRECRACKER_GUEST_POWERS_OFF   "1": the guest powers off on Ctrl-Alt-Del instead of
//                                       rebooting; like Firecracker on x86_64, the VMM lives on
//   FAKE_FIRECRACKER_SHUTDOWN_DELAY_MS  guest shutdown time after Ctrl-Alt-Del (default 150)
//   FAKE_FIRECRACKER_MAX_LIFETIME_MS    safety net against leaked processes (default 300000)
//   FAKE_FIRECRACKER_VERSION            the version it reports and behaves as (default 1.8.0)
//   FAKE_FIRECRACKER_GUEST_IDENTITY     how the guest answers an identity line: ok (default),
//                                       refuse (identity-error), silent (never answers)
//   FIRECRACKER_OPENAPI_SPEC            the OpenAPI document (default shared/firecracker/firecracker.yaml)
//   FAKE_FIRECRACKER_CHROOT             set by the stand-in jailer (fake-jailer.ts): the directory the
//                                       real one would chroot into. Every path (API socket, kernel,
//                                       drives) is then resolved inside it, as in a real jail.
import { appendFileSync, closeSync, existsSync, ftruncateSync, openSync, readFileSync, readSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { createConnection, createServer as createNetServer, type Server, type Socket } from 'node:net';
import type {
  BootSource,
  Drive,
  MachineConfiguration,
  NetworkInterface,
  SnapshotCreateParams,
  SnapshotLoadParams,
  Vm,
  Vsock,
} from '../../../src/hypervisors/firecracker/api-types.ts';
import { FirecrackerSpecValidator, type SpecOperation } from './openapi-validator.ts';

const VERSION = process.env.FAKE_FIRECRACKER_VERSION ?? '1.8.0';
/** Firecracker's FcExitCode::ArgParsing. */
const EXIT_ARG_PARSING = 153;

const env = process.env;
const violationsLog = env.FAKE_FIRECRACKER_VIOLATIONS_LOG;
const requestLog = env.FAKE_FIRECRACKER_REQUEST_LOG;
const failInstanceStart = env.FAKE_FIRECRACKER_FAIL_INSTANCE_START;
const ignoreCtrlAltDel = env.FAKE_FIRECRACKER_IGNORE_CTRL_ALT_DEL === '1';
const guestPowersOff = env.FAKE_FIRECRACKER_GUEST_POWERS_OFF === '1';
const shutdownDelayMs = Number(env.FAKE_FIRECRACKER_SHUTDOWN_DELAY_MS ?? 150);
const maxLifetimeMs = Number(env.FAKE_FIRECRACKER_MAX_LIFETIME_MS ?? 300_000);
const chroot = env.FAKE_FIRECRACKER_CHROOT;
const guestIdentity = env.FAKE_FIRECRACKER_GUEST_IDENTITY ?? 'ok';

/** Where a path the VMM was given is on the host: inside the jail when there is one. */
function hostPath(path: string): string {
  return chroot ? join(chroot, resolve('/', path)) : path;
}

function record(file: string | undefined, entry: Record<string, unknown>): void {
  if (file) appendFileSync(file, `${JSON.stringify({ time: new Date().toISOString(), pid: process.pid, ...entry })}\n`);
}

function logLine(message: string): void {
  process.stdout.write(`${new Date().toISOString()} [${instanceId}:fc_api] ${message}\n`);
}

function parseArgs(argv: readonly string[]): { apiSock: string; id: string } {
  const values = new Map<string, string>();
  const takesValue = new Set(['api-sock', 'id', 'start-time-us', 'start-time-cpu-us', 'parent-cpu-time-us']);
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (arg === '--version') {
      process.stdout.write(`Firecracker v${VERSION}\n\n`);
      process.exit(0);
    }
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    const name = m?.[1];
    if (!name || !takesValue.has(name)) {
      process.stderr.write(
        `Error: Arguments parsing error: Found argument '${arg}' which wasn't expected, or isn't valid in this context.\n`,
      );
      process.exit(EXIT_ARG_PARSING);
    }
    const value = m?.[2] ?? argv[++i];
    if (value === undefined) {
      process.stderr.write(`Error: Arguments parsing error: The argument '--${name}' requires a value, but none was supplied\n`);
      process.exit(EXIT_ARG_PARSING);
    }
    if (values.has(name)) {
      process.stderr.write(`Error: Arguments parsing error: The argument '--${name}' was provided more than once.\n`);
      process.exit(EXIT_ARG_PARSING);
    }
    values.set(name, value);
  }
  return { apiSock: values.get('api-sock') ?? '/run/firecracker.socket', id: values.get('id') ?? 'anonymous-instance' };
}

const { apiSock, id: instanceId } = parseArgs(process.argv.slice(2));

// utils::validators::validate_instance_id, which main() unwraps (a panic) in Firecracker.
if (instanceId.length < 1 || instanceId.length > 64) {
  process.stderr.write(`thread 'main' panicked: Invalid instance ID: InvalidLen(${instanceId.length}, 1, 64)\n`);
  process.exit(1);
}
const badChar = [...instanceId].findIndex((c) => !/[A-Za-z0-9-]/.test(c));
if (badChar >= 0) {
  process.stderr.write(`thread 'main' panicked: Invalid instance ID: InvalidChar('${instanceId[badChar]}', ${badChar})\n`);
  process.exit(1);
}
if (existsSync(hostPath(apiSock))) {
  // bind() on an existing path fails: Firecracker never removes a stale socket itself.
  process.stderr.write(
    `Error: RunWithApi(FailedToBindSocket): Failed to open the API socket at: ${apiSock}. Check that it is not already used.\n`,
  );
  process.exit(1);
}

const validator = FirecrackerSpecValidator.load();

interface VmState {
  started: boolean;
  paused: boolean;
  /** Anything but the logger and metrics configured: a snapshot can no longer be loaded. */
  configured: boolean;
  machine: MachineConfiguration;
  boot?: BootSource;
  vsock?: Vsock;
  vsockServer?: Server;
  /** The guest waits for an identity line (booted with clarateach.identity=wait). */
  awaitsIdentity: boolean;
  readonly drives: Map<string, Drive>;
  readonly nets: Map<string, NetworkInterface>;
}

const vm: VmState = {
  started: false,
  paused: false,
  configured: false,
  awaitsIdentity: false,
  machine: { vcpu_count: 1, mem_size_mib: 128, smt: false, track_dirty_pages: false, huge_pages: 'None' },
  drives: new Map(),
  nets: new Map(),
};

class Refusal extends Error {}

const OS_ERRORS: Record<string, string> = {
  ENOENT: 'No such file or directory (os error 2)',
  EACCES: 'Permission denied (os error 13)',
  EISDIR: 'Is a directory (os error 21)',
  EROFS: 'Read-only file system (os error 30)',
  ENOTDIR: 'Not a directory (os error 20)',
};

/** Opens a file as Firecracker would when it is configured, and renders the error like Rust's io::Error. */
function openError(path: string, writable: boolean): string | undefined {
  try {
    closeSync(openSync(hostPath(path), writable ? 'r+' : 'r'));
    return undefined;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'EIO';
    return OS_ERRORS[code] ?? `${code} (os error)`;
  }
}

/** x86_64 Firecracker loads ELF vmlinux or a bzImage ("HdrS" at 0x202). */
function kernelFormatError(path: string): string | undefined {
  const head = Buffer.alloc(0x206);
  let read = 0;
  try {
    const fd = openSync(hostPath(path), 'r');
    try {
      read = readSync(fd, head, 0, head.length, 0);
    } finally {
      closeSync(fd);
    }
  } catch (error) {
    return `Cannot load kernel due to invalid memory configuration or invalid kernel image: ${(error as Error).message}`;
  }
  const elf = read >= 4 && head.subarray(0, 4).equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
  const bzImage = read >= 0x206 && head.subarray(0x202, 0x206).toString('latin1') === 'HdrS';
  return elf || bzImage
    ? undefined
    : 'Cannot load kernel due to invalid memory configuration or invalid kernel image: Invalid Elf magic number';
}

const PATH_ID = /^[A-Za-z0-9_]+$/;

function checkedPathId(pathParams: Readonly<Record<string, string>>, name: string, bodyId: string): string {
  const id = pathParams[name] ?? '';
  if (!PATH_ID.test(id)) throw new Refusal('API Resource IDs can only contain alphanumeric characters and underscores.');
  if (id !== bodyId) throw new Refusal('The id from the path does not match the id from the body!');
  return id;
}

function bootLines(): string[] {
  const boot = vm.boot as BootSource;
  const drives = [...vm.drives.values()].map((d) => `${d.drive_id}(${d.is_read_only ? 'ro' : 'rw'})`).join(' ');
  const nets = [...vm.nets.values()].map((n) => `${n.iface_id}->${n.host_dev_name} ${n.guest_mac ?? ''}`.trim()).join(' ');
  return [
    `[    0.000000] Linux version 6.1.0-fake (fake-firecracker) #1 SMP`,
    `[    0.000000] Command line: ${boot.boot_args ?? ''}`,
    `[    0.010000] fake-firecracker: ${vm.machine.vcpu_count} vCPUs, ${vm.machine.mem_size_mib} MiB, drives ${drives || 'none'}, net ${nets || 'none'}`,
    `[    0.020000] Run /init as init process`,
  ];
}

/** PUT replaces the machine configuration (with Firecracker's defaults), PATCH updates it. */
function applyMachineConfig(replace: boolean, body: unknown): undefined {
  const update = (body ?? {}) as Partial<MachineConfiguration>;
  const next = replace
    ? { smt: false, track_dirty_pages: false, huge_pages: 'None' as const, ...(update as MachineConfiguration) }
    : { ...vm.machine, ...update };
  if (next.mem_size_mib === 0) throw new Refusal('Machine config error: The memory size (MiB) is invalid.');
  if (next.smt && next.vcpu_count > 1 && next.vcpu_count % 2 === 1) {
    throw new Refusal(
      'Machine config error: The vCPU number is invalid! The vCPU number can only be 1 or an even number when SMT is enabled.',
    );
  }
  vm.machine = next;
  return undefined;
}

/** The kernel (and initrd) must open, as Firecracker opens them right away. */
function applyBootSource(body: unknown): undefined {
  const boot = body as BootSource;
  const kernel = openError(boot.kernel_image_path, false);
  if (kernel) throw new Refusal(`Boot source error: The kernel file cannot be opened: ${kernel}`);
  if (boot.initrd_path !== undefined) {
    const initrd = openError(boot.initrd_path, false);
    if (initrd) throw new Refusal(`Boot source error: The initrd file cannot be opened: ${initrd}`);
  }
  vm.boot = boot;
  return undefined;
}

/** One root device at most; the backing file must open (read-write unless read-only). */
function applyDrive(pathParams: Readonly<Record<string, string>>, body: unknown): undefined {
  const drive = body as Drive;
  checkedPathId(pathParams, 'drive_id', drive.drive_id);
  if (drive.is_root_device && [...vm.drives.values()].some((d) => d.is_root_device && d.drive_id !== drive.drive_id)) {
    throw new Refusal('Drive config error: A root block device already exists!');
  }
  if (drive.path_on_host === undefined)
    throw new Refusal('Drive config error: Unable to create the virtio block device: missing path_on_host');
  const problem = openError(drive.path_on_host, !drive.is_read_only);
  if (problem) {
    throw new Refusal(`Drive config error: Unable to create the virtio block device: BackingFile(${problem}, "${drive.path_on_host}")`);
  }
  vm.drives.set(drive.drive_id, drive);
  return undefined;
}

/** A valid MAC, a TAP name Linux accepts, not used by another interface. */
function applyNetworkInterface(pathParams: Readonly<Record<string, string>>, body: unknown): undefined {
  const net = body as NetworkInterface;
  checkedPathId(pathParams, 'iface_id', net.iface_id);
  if (net.guest_mac !== undefined && !/^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$/.test(net.guest_mac)) {
    throw new Refusal(`An error occurred when deserializing the json body of a request: invalid MAC address ${net.guest_mac}.`);
  }
  // The TAP is opened here; Linux interface names are at most 15 bytes.
  if (net.host_dev_name === '' || Buffer.byteLength(net.host_dev_name) > 15) {
    throw new Refusal(
      `Network config error: Could not create the network device: Open tap device failed: Invalid TUN/TAP Backend provided by ${net.host_dev_name}.`,
    );
  }
  for (const other of vm.nets.values()) {
    if (other.iface_id !== net.iface_id && other.host_dev_name === net.host_dev_name) {
      throw new Refusal(`Network config error: The host device name ${net.host_dev_name} is already in use.`);
    }
  }
  vm.nets.set(net.iface_id, net);
  return undefined;
}

/** InstanceStart boots (prints a boot log); SendCtrlAltDel reboots, powers off or is ignored, as configured. */
function applyAction(body: unknown): undefined {
  const action = (body as { action_type: string }).action_type;
  if (action === 'InstanceStart') {
    if (vm.started) throw new Refusal('The requested operation is not supported after starting the microVM.');
    if (!vm.boot) throw new Refusal('Start microvm error: Cannot start microvm without kernel configuration.');
    if (failInstanceStart) throw new Refusal(`Start microvm error: ${failInstanceStart}`);
    const kernel = kernelFormatError(vm.boot.kernel_image_path);
    if (kernel) throw new Refusal(`Start microvm error: ${kernel}`);
    vm.started = true;
    logLine('Successfully started microvm that was configured from API calls');
    for (const line of bootLines()) process.stdout.write(`${line}\n`);
    // A template boot: once its services run the guest says ready over vsock (clarateach-init).
    vm.awaitsIdentity = /(^| )clarateach\.identity=wait( |$)/.test(vm.boot.boot_args ?? '');
    guestConnect();
    return undefined;
  }
  if (!vm.started) throw new Refusal('The requested operation is not supported before starting the microVM.');
  if (action === 'SendCtrlAltDel') {
    if (guestPowersOff) {
      setTimeout(() => process.stdout.write('[   42.000000] reboot: Power down\n'), shutdownDelayMs);
    } else if (!ignoreCtrlAltDel) {
      setTimeout(() => {
        process.stdout.write('[   42.000000] reboot: Restarting system\n');
        logLine('Vmm is stopping.');
        record(requestLog, { event: 'exit', code: 0 });
        process.exit(0);
      }, shutdownDelayMs);
    }
    return undefined;
  }
  return undefined; // FlushMetrics
}

/** "1.12.0" -> [1, 12, 0], for the fields later versions added. */
function versionAtLeast(major: number, minor: number): boolean {
  const [a = 0, b = 0] = VERSION.split('.').map(Number);
  return a > major || (a === major && b >= minor);
}

/** Binds the vsock device's socket, as Firecracker does when the device is made (host-initiated connections). */
function bindVsock(udsPath: string): Server {
  const path = hostPath(udsPath);
  if (existsSync(path)) {
    throw new Refusal(
      `Vsock config error: Cannot create backend for vsock device: UnixBind(Os { code: 98, kind: AddrInUse, message: "Address in use" })`,
    );
  }
  const server = createNetServer((socket) => socket.destroy());
  server.listen(path);
  return server;
}

function applyVsock(body: unknown): undefined {
  const vsock = body as Vsock;
  vm.vsockServer?.close();
  vm.vsockServer = bindVsock(vsock.uds_path);
  vm.vsock = vsock;
  return undefined;
}

// ---- the guest's side of the identity channel (clarateach-init's vsock loop) ----------------------

let guestSocket: Socket | undefined;
let guestTimer: NodeJS.Timeout | undefined;

/** Connects (again) to the agent's `<uds_path>_52`, says ready, answers the identity line it gets. */
function guestConnect(): void {
  if (guestSocket || guestTimer || !vm.vsock || !vm.awaitsIdentity || vm.paused || !vm.started) return;
  const retry = (): void => {
    guestSocket = undefined;
    guestTimer = setTimeout(() => {
      guestTimer = undefined;
      guestConnect();
    }, 50);
  };
  const socket = createConnection(hostPath(`${vm.vsock.uds_path}_52`));
  guestSocket = socket;
  let buffer = '';
  let answered = false;
  socket.setEncoding('utf8');
  socket.on('connect', () => {
    record(requestLog, { event: 'guest', step: 'connected' });
    socket.write('ready\n');
  });
  socket.on('data', (chunk: string) => {
    if (vm.paused) return; // a paused guest reads nothing; the snapshot resets this connection
    buffer += chunk;
    const end = buffer.indexOf('\n');
    if (end < 0 || answered) return;
    const line = buffer.slice(0, end);
    answered = true;
    record(requestLog, { event: 'guest', step: 'identity', line });
    if (guestIdentity === 'silent') return;
    const ok = line.startsWith('clarateach-identity/1 ') && guestIdentity === 'ok';
    socket.end(
      ok ? 'identity-ok at 0.2 s\n' : `identity-error ${guestIdentity === 'ok' ? 'unknown identity version' : 'refused by the stand-in'}\n`,
    );
    if (ok) {
      vm.awaitsIdentity = false;
      process.stdout.write('clarateach-init: identity: applied\n');
    }
  });
  socket.on('error', () => {});
  socket.on('close', () => {
    if (guestSocket !== socket) return;
    guestSocket = undefined;
    // Like the guest's loop: a connection that ended without an identity is made again.
    if (vm.awaitsIdentity && !vm.paused) retry();
  });
}

/** The guest side of a vsock transport reset: every connection is closed. */
function guestReset(): void {
  clearTimeout(guestTimer);
  guestTimer = undefined;
  const socket = guestSocket;
  guestSocket = undefined;
  socket?.destroy();
}

// ---- snapshots ------------------------------------------------------------------------------------

const SNAPSHOT_FORMAT = 'fake-firecracker-snapshot/1';
const MIB = 1024 * 1024;

interface FakeSnapshot {
  readonly format: string;
  readonly version: string;
  readonly machine: MachineConfiguration;
  readonly boot?: BootSource;
  readonly drives: Drive[];
  readonly nets: NetworkInterface[];
  readonly vsock?: Vsock;
  readonly awaitsIdentity: boolean;
}

function applyVmState(body: unknown): undefined {
  const state = (body as Vm).state;
  if (!vm.started) throw new Refusal('The requested operation is not supported before starting the microVM.');
  if (state === 'Paused') {
    vm.paused = true;
  } else {
    vm.paused = false;
    guestConnect();
  }
  return undefined;
}

function applySnapshotCreate(body: unknown): undefined {
  const params = body as SnapshotCreateParams;
  if (!vm.paused) throw new Refusal('Create snapshot error: Cannot save the microVM state: the microVM is not paused.');
  if (params.snapshot_type === 'Diff' && !vm.machine.track_dirty_pages) {
    throw new Refusal('Create snapshot error: Diff snapshots are not allowed on uVMs with dirty page tracking disabled.');
  }
  const snapshot: FakeSnapshot = {
    format: SNAPSHOT_FORMAT,
    version: VERSION,
    machine: vm.machine,
    ...(vm.boot ? { boot: vm.boot } : {}),
    drives: [...vm.drives.values()],
    nets: [...vm.nets.values()],
    ...(vm.vsock ? { vsock: vm.vsock } : {}),
    awaitsIdentity: vm.awaitsIdentity,
  };
  try {
    writeFileSync(hostPath(params.snapshot_path), `${JSON.stringify(snapshot)}\n`);
    const fd = openSync(hostPath(params.mem_file_path), 'w', 0o600);
    try {
      ftruncateSync(fd, vm.machine.mem_size_mib * MIB); // sparse, as an untouched guest's memory mostly is
    } finally {
      closeSync(fd);
    }
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'EIO';
    throw new Refusal(`Create snapshot error: Cannot write the snapshot files: ${OS_ERRORS[code] ?? code}`);
  }
  // Firecracker resets the vsock device when it saves it: the guest's connections end.
  guestReset();
  record(requestLog, { event: 'snapshot-created', snapshot });
  return undefined;
}

function readSnapshot(path: string): FakeSnapshot {
  let value: Partial<FakeSnapshot>;
  try {
    value = JSON.parse(readFileSync(hostPath(path), 'utf8')) as Partial<FakeSnapshot>;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new Refusal(
      `Load snapshot error: Cannot build the microVM from the snapshot: ${code ? (OS_ERRORS[code] ?? code) : 'Cannot deserialize the microVM state'}`,
    );
  }
  if (value.format !== SNAPSHOT_FORMAT || !value.machine || !value.drives || !value.nets) {
    throw new Refusal('Load snapshot error: Cannot build the microVM from the snapshot: Cannot deserialize the microVM state');
  }
  return value as FakeSnapshot;
}

function applySnapshotLoad(body: unknown): undefined {
  const params = body as SnapshotLoadParams;
  // serde's deny_unknown_fields of the version the stand-in plays.
  if (params.network_overrides !== undefined && !versionAtLeast(1, 12)) {
    throw new Refusal('An error occurred when deserializing the json body of a request: unknown field `network_overrides`.');
  }
  if (params.vsock_override !== undefined && !versionAtLeast(1, 16)) {
    throw new Refusal('An error occurred when deserializing the json body of a request: unknown field `vsock_override`.');
  }
  if (vm.configured) throw new Refusal('Loading a microVM snapshot not allowed after configuring boot-specific resources.');
  if ((params.mem_backend === undefined) === (params.mem_file_path === undefined)) {
    throw new Refusal(
      'An error occurred when deserializing the json body of a request: exactly one of mem_backend and mem_file_path is allowed.',
    );
  }
  if (params.mem_backend?.backend_type === 'Uffd') throw new NotEmulated('loadSnapshot with a Uffd memory backend');
  const snapshot = readSnapshot(params.snapshot_path);
  const memPath = params.mem_backend?.backend_path ?? params.mem_file_path ?? '';
  const memProblem = openError(memPath, false);
  if (memProblem) throw new Refusal(`Load snapshot error: Cannot restore the guest memory: ${memProblem}`);
  if (statSync(hostPath(memPath)).size !== snapshot.machine.mem_size_mib * MIB) {
    throw new Refusal('Load snapshot error: Cannot restore the guest memory: the memory file does not match the saved memory size');
  }
  // The drives are opened again at the paths recorded in the snapshot.
  for (const drive of snapshot.drives) {
    const problem = openError(drive.path_on_host ?? '', !drive.is_read_only);
    if (problem) {
      throw new Refusal(
        `Load snapshot error: Failed to restore MicroVM state: Block device error: BackingFile(${problem}, "${drive.path_on_host ?? ''}")`,
      );
    }
  }
  const nets = snapshot.nets.map((n) => ({ ...n }));
  for (const override of params.network_overrides ?? []) {
    const net = nets.find((n) => n.iface_id === override.iface_id);
    if (!net) throw new Refusal(`Load snapshot error: Invalid network override: no interface ${override.iface_id} in the snapshot`);
    net.host_dev_name = override.host_dev_name;
  }
  for (const net of nets) {
    if (net.host_dev_name === '' || Buffer.byteLength(net.host_dev_name) > 15) {
      throw new Refusal(
        `Load snapshot error: Failed to restore MicroVM state: Net device error: Open tap device failed: Invalid TUN/TAP Backend provided by ${net.host_dev_name}.`,
      );
    }
  }
  const vsock = snapshot.vsock && params.vsock_override ? { ...snapshot.vsock, uds_path: params.vsock_override.uds_path } : snapshot.vsock;
  if (vsock) vm.vsockServer = bindVsock(vsock.uds_path);
  vm.machine = snapshot.machine;
  if (snapshot.boot) vm.boot = snapshot.boot;
  for (const drive of snapshot.drives) vm.drives.set(drive.drive_id, drive);
  for (const net of nets) vm.nets.set(net.iface_id, net);
  if (vsock) vm.vsock = vsock;
  vm.awaitsIdentity = snapshot.awaitsIdentity;
  vm.started = true;
  vm.paused = params.resume_vm !== true;
  record(requestLog, { event: 'snapshot-loaded', nets, drives: snapshot.drives, vsock: vsock ?? null, paused: vm.paused });
  logLine('Successfully restored microvm from a snapshot');
  guestConnect();
  return undefined;
}

/** Applies a request that conforms to the document; returns the JSON answer (undefined: 204). */
function apply(operation: SpecOperation, pathParams: Readonly<Record<string, string>>, body: unknown): unknown {
  const preBootOnly = /pre-boot only/i.test(operation.summary) || operation.operationId === 'loadSnapshot';
  const postBootOnly = /post-boot only/i.test(operation.summary);
  if (preBootOnly && vm.started) throw new Refusal('The requested operation is not supported after starting the microVM.');
  if (postBootOnly && !vm.started) throw new Refusal('The requested operation is not supported before starting the microVM.');
  const configures = preBootOnly && !['loadSnapshot', 'putLogger', 'putMetrics'].includes(operation.operationId);
  const answer = applyOperation(operation, pathParams, body);
  if (configures) vm.configured = true;
  return answer;
}

function applyOperation(operation: SpecOperation, pathParams: Readonly<Record<string, string>>, body: unknown): unknown {
  switch (operation.operationId) {
    case 'describeInstance':
      return {
        app_name: 'Firecracker',
        id: instanceId,
        state: vm.started ? (vm.paused ? 'Paused' : 'Running') : 'Not started',
        vmm_version: VERSION,
      };
    case 'getFirecrackerVersion':
      return { firecracker_version: VERSION };
    case 'getMachineConfiguration':
      return vm.machine;
    case 'putMachineConfiguration':
    case 'patchMachineConfiguration':
      return applyMachineConfig(operation.operationId === 'putMachineConfiguration', body);
    case 'putGuestBootSource':
      return applyBootSource(body);
    case 'putGuestDriveByID':
      return applyDrive(pathParams, body);
    case 'putGuestNetworkInterfaceByID':
      return applyNetworkInterface(pathParams, body);
    case 'createSyncAction':
      return applyAction(body);
    case 'putGuestVsock':
      return applyVsock(body);
    case 'patchVm':
      return applyVmState(body);
    case 'createSnapshot':
      return applySnapshotCreate(body);
    case 'loadSnapshot':
      return applySnapshotLoad(body);
    case 'putLogger':
    case 'putMetrics':
      return undefined;
    default:
      throw new NotEmulated(operation.operationId);
  }
}

class NotEmulated extends Error {}

function answer(res: ServerResponse, status: number, body?: unknown): void {
  if (body === undefined) {
    res.writeHead(status);
    res.end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

function handle(req: IncomingMessage, raw: string, res: ServerResponse): void {
  const method = req.method ?? '';
  const path = req.url ?? '';
  const check = validator.check({
    method,
    path,
    body: raw,
    contentType: req.headers['content-type'],
    transferEncoding: req.headers['transfer-encoding'],
  });
  let status = 204;
  let reply: unknown;
  let fault: string | undefined;
  if (check.violations.length > 0 || !check.operation) {
    status = 400;
    const firstToken = path.replace(/^\/+/, '').split(/[/?]/)[0] ?? '';
    fault = !check.operation
      ? `Invalid request method and/or path: ${method} ${firstToken}.`
      : `An error occurred when deserializing the json body of a request: ${check.violations.join('; ')}.`;
    record(violationsLog, { method, path, body: raw, violations: check.violations });
    process.stderr.write(`fake-firecracker: spec violation: ${method} ${path}: ${check.violations.join('; ')}\n`);
  } else {
    try {
      reply = apply(check.operation, check.pathParams, check.body);
      if (reply !== undefined) status = 200;
    } catch (error) {
      status = 400;
      if (error instanceof NotEmulated) {
        fault = `fake-firecracker does not emulate ${error.message}`;
        record(violationsLog, { method, path, body: raw, violations: [`not emulated by the stand-in: ${error.message}`] });
      } else if (error instanceof Refusal) {
        fault = error.message;
      } else {
        throw error;
      }
    }
  }
  record(requestLog, {
    event: 'request',
    method,
    path,
    operationId: check.operation?.operationId,
    body: check.body,
    status,
    ...(fault === undefined ? {} : { fault }),
  });
  if (fault !== undefined) {
    logLine(`Received Error. Status code: 400 Bad Request. Message: ${fault}`);
    answer(res, 400, { fault_message: fault });
  } else {
    answer(res, status, reply);
  }
}

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (chunk: Buffer) => chunks.push(chunk));
  req.on('end', () => handle(req, Buffer.concat(chunks).toString('utf8'), res));
});

server.listen(hostPath(apiSock), () => {
  logLine(`Running Firecracker v${VERSION} (fake, instance ${instanceId})`);
  record(requestLog, {
    event: 'listening',
    id: instanceId,
    apiSock,
    args: process.argv.slice(2),
    uid: process.getuid?.(),
    gid: process.getgid?.(),
    groups: process.getgroups?.(),
    ...(chroot ? { chroot } : {}),
  });
});
server.on('error', (error) => {
  process.stderr.write(`Error: ${error.message}\n`);
  process.exit(1);
});

setTimeout(() => {
  process.stderr.write(`fake-firecracker: still running after ${maxLifetimeMs} ms, exiting\n`);
  process.exit(2);
}, maxLifetimeMs).unref();
