// A stand-in for Firecracker's `jailer`, for tests on machines without it (docs/jailer.md,
// src/jailer/src/{env,cgroup,chroot}.rs):
//
//   jailer --id <id> --exec-file <exec_file> --uid <uid> --gid <gid>
//          [--parent-cgroup <relative_path>] [--cgroup-version <1|2>] [--cgroup <file>=<value>]...
//          [--chroot-base-dir <dir>] [--netns <path>] [--resource-limit <resource>=<value>]...
//          [--daemonize] [--new-pid-ns] [-- <extra arguments for Firecracker>]
//
// fake-jailer-shim.ts writes the `jailer` executable: a shell script that runs this file and then
// `eval`s what it prints, so that, as with the real jailer, Firecracker ends up in the jailer's
// own process (same pid), or, with --new-pid-ns, in a child whose pid goes to <exec_name>.pid.
//
// It checks its argv as the real one does (unknown, missing, repeated or malformed arguments are
// refused) and performs the same steps, in the same order, except those that need a real chroot:
//   1. <chroot_base>/<exec_file_name>/<id>/root created; exec_file copied into it.
//   2. --netns: the handle must exist; Firecracker is started through `nsenter --net=<netns>`.
//   3. --resource-limit (default no-file=2048): applied with `ulimit` before the exec.
//   4. cgroups from $FAKE_JAILER_PROC_MOUNTS (default /proc/mounts): v1 inherit-from-parent then
//      the value, pid into `tasks`; v2 controllers enabled in every ancestor's
//      cgroup.subtree_control, the value, pid into cgroup.procs. The pid is the shell's, which
//      execs Firecracker ($FAKE_JAILER_SELF_PID).
//   5. No pivot_root/chroot: Firecracker gets $FAKE_JAILER_CHROOT instead and resolves every path
//      inside it (fake-firecracker.ts). /, /dev, /dev/net, /run of the jail: mode 0700, owned by
//      uid:gid; /dev/net/tun (10,200) and /dev/kvm (10,232) created with mknod and chowned.
//   6. Environment cleared; uid/gid dropped for real (setpriv --reuid --regid --clear-groups);
//      exec `<chroot>/<exec_file_name> --id <id> --start-time-us N --start-time-cpu-us N
//      --parent-cpu-time-us N <extra args>`, working directory the jail's root.
// Every step is appended to $FAKE_JAILER_LOG (JSON lines), starting with the argv.
import { execFileSync } from 'node:child_process';
import {
  accessSync,
  appendFileSync,
  chmodSync,
  chownSync,
  constants as fsConstants,
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  realpathSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { basename, delimiter, dirname, isAbsolute, join } from 'node:path';
import { shellQuote } from '../../../src/shared/shell.ts';

const logFile = process.env.FAKE_JAILER_LOG;
const procMounts = process.env.FAKE_JAILER_PROC_MOUNTS ?? '/proc/mounts';
const selfPid = Number(process.env.FAKE_JAILER_SELF_PID ?? process.ppid);

function record(entry: Record<string, unknown>): void {
  if (logFile) appendFileSync(logFile, `${JSON.stringify({ time: new Date().toISOString(), ...entry })}\n`);
}

/** The real jailer reports errors on stderr and exits 1; a failed cgroup write is a panic (101). */
function die(message: string, code = 1): never {
  record({ event: 'error', message });
  process.stderr.write(`Jailer error: ${message}\n`);
  process.exit(code);
}

const SINGLE = new Set(['id', 'exec-file', 'uid', 'gid', 'parent-cgroup', 'cgroup-version', 'chroot-base-dir', 'netns']);
const MULTI = new Set(['cgroup', 'resource-limit']);
const FLAGS = new Set(['daemonize', 'new-pid-ns']);

interface Args {
  readonly single: Map<string, string>;
  readonly multi: Map<string, string[]>;
  readonly flags: Set<string>;
  readonly extra: string[];
}

function parse(argv: readonly string[]): Args {
  const single = new Map<string, string>();
  const multi = new Map<string, string[]>();
  const flags = new Set<string>();
  let extra: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    if (arg === '--') {
      extra = argv.slice(i + 1);
      break;
    }
    const name = /^--([a-z-]+)$/.exec(arg)?.[1];
    if (name === undefined || !(SINGLE.has(name) || MULTI.has(name) || FLAGS.has(name))) {
      die(`Arguments parsing error: Found argument '${arg}' which wasn't expected, or isn't valid in this context.`);
    }
    if (FLAGS.has(name)) {
      if (flags.has(name)) die(`Arguments parsing error: The argument '--${name}' was provided more than once.`);
      flags.add(name);
      continue;
    }
    const value = argv[++i];
    if (value === undefined || value.startsWith('--'))
      die(`Arguments parsing error: The argument '--${name}' requires a value, but none was supplied`);
    if (MULTI.has(name)) {
      multi.set(name, [...(multi.get(name) ?? []), value]);
    } else {
      if (single.has(name)) die(`Arguments parsing error: The argument '--${name}' was provided more than once.`);
      single.set(name, value);
    }
  }
  for (const required of ['id', 'exec-file', 'uid', 'gid']) {
    if (!single.has(required)) die(`Arguments parsing error: Missing the required argument '--${required}'.`);
  }
  return { single, multi, flags, extra };
}

function which(command: string): string {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter)) {
    const path = join(dir, command);
    try {
      accessSync(path, fsConstants.X_OK);
      return path;
    } catch {
      // next
    }
  }
  return die(`${command} not found on PATH (the stand-in jailer needs it)`);
}

const argv = process.argv.slice(2);
record({ event: 'argv', argv });
const args = parse(argv);
const value = (name: string): string => args.single.get(name) ?? '';

// Validation, as Env::new does it.
const id = value('id');
if (!/^[A-Za-z0-9-]{1,64}$/.test(id)) die(`Invalid instance ID: ${id}`);
let execFile: string;
try {
  execFile = realpathSync(value('exec-file'));
} catch (error) {
  die(`Failed to canonicalize path ${value('exec-file')}: ${(error as Error).message}`);
}
if (!statSync(execFile).isFile()) die(`${execFile} is not a file`);
const execName = basename(execFile);
if (!execName.includes('firecracker'))
  die(`Invalid filename. The filename of \`--exec-file\` option must contain "firecracker": ${execName}`);
const chrootBaseArg = args.single.get('chroot-base-dir') ?? '/srv/jailer';
let chrootBase: string;
try {
  chrootBase = realpathSync(chrootBaseArg);
} catch (error) {
  die(`Failed to canonicalize path ${chrootBaseArg}: ${(error as Error).message}`);
}
if (!statSync(chrootBase).isDirectory()) die(`${chrootBase} is not a directory`);
const idNumber = (name: 'uid' | 'gid'): number => {
  const text = value(name);
  if (!/^\d+$/.test(text) || Number(text) > 0xffff_ffff) die(`Invalid ${name}: ${text}`);
  return Number(text);
};
const uid = idNumber('uid');
const gid = idNumber('gid');
const parentCgroup = args.single.get('parent-cgroup') ?? execName;
if (isAbsolute(parentCgroup) || parentCgroup.split('/').some((c) => c === '.' || c === '..'))
  die(`Invalid parent cgroup path: ${parentCgroup}`);
const cgroupVersion = args.single.get('cgroup-version') ?? '1';
if (cgroupVersion !== '1' && cgroupVersion !== '2') die(`Invalid cgroup version: ${cgroupVersion}`);
const cgroups = (args.multi.get('cgroup') ?? []).map((arg) => {
  const parts = arg.split('=');
  if (parts.length !== 2 || !parts[1]) die(`Invalid cgroup format: ${arg}`);
  const [file = '', cgValue = ''] = parts;
  const controller = file.split('.');
  if (controller.length < 2 || !controller[0]) die(`Invalid cgroup file: ${file}`);
  return { file, value: cgValue, controller: controller[0] };
});
const limits = new Map<string, number>([['no-file', 2048]]);
for (const arg of args.multi.get('resource-limit') ?? []) {
  const [name = '', limit = ''] = arg.split('=', 2);
  if (!arg.includes('=')) die(`Invalid resource limit format: ${arg}`);
  if (name !== 'fsize' && name !== 'no-file') die(`Invalid resource limit argument: ${name}`);
  if (!/^\d+$/.test(limit)) die(`Invalid resource limit value: ${limit}`);
  limits.set(name, Number(limit));
}
const netns = args.single.get('netns');
const daemonize = args.flags.has('daemonize');
const newPidNs = args.flags.has('new-pid-ns');

// 1. The chroot directory and the copy of the exec file.
const chrootDir = join(chrootBase, execName, id, 'root');
mkdirSync(chrootDir, { recursive: true });
const jailedExec = join(chrootDir, execName);
copyFileSync(execFile, jailedExec);
chmodSync(jailedExec, statSync(execFile).mode & 0o7777);
record({ event: 'step', step: 'copy', from: execFile, to: jailedExec });

// 2. Network namespace.
if (netns !== undefined) {
  if (!existsSync(netns)) die(`Failed to open ${netns}: No such file or directory (os error 2)`);
  record({ event: 'step', step: 'netns', netns });
}

// 3. Resource limits.
record({ event: 'step', step: 'rlimits', limits: Object.fromEntries(limits) });

// 4. cgroups.
function readln(file: string): string {
  try {
    return readFileSync(file, 'utf8').replace(/\n$/, '').split('\n')[0] ?? '';
  } catch (error) {
    return die(`Failed to read ${file}: ${(error as Error).message}`, 101);
  }
}
function writeln(file: string, text: string): void {
  try {
    writeFileSync(file, `${text}\n`);
  } catch (error) {
    die(`thread 'main' panicked: Failed to write to ${file}: ${(error as Error).message}`, 101);
  }
  record({ event: 'cgroup-write', file, value: text });
}
function inheritFromParent(location: string, file: string, depth: number): void {
  const parentFile = join(dirname(location), file);
  let line = readln(parentFile);
  if (line === '' && depth > 0) {
    try {
      inheritFromParent(dirname(location), file, depth - 1);
    } catch {
      // checked again below
    }
    line = readln(parentFile);
  }
  if (line === '') die(`Failed to inherit cgroup ${file} from the parent of ${location}`, 101);
  writeln(join(location, file), line);
}
function enableInAncestors(dir: string, controller: string): void {
  const file = join(dir, 'cgroup.subtree_control');
  if (!existsSync(file)) return;
  const parent = dirname(dir);
  if (parent !== dir) enableInAncestors(parent, controller);
  writeln(file, `+${controller}`);
}
if (cgroups.length > 0) {
  const mounts = readFileSync(procMounts, 'utf8')
    .split('\n')
    .map((line) => /^([a-z2]*)\s(?<dir>.*)\scgroup(?<ver>2?)\s(?<options>.*)\s0\s0$/.exec(line)?.groups)
    .filter((g): g is Record<string, string> => g !== undefined);
  const attachTo = new Set<string>();
  if (cgroupVersion === '2') {
    const unified = mounts.find((m) => m.ver === '2')?.dir;
    if (!unified) die('cgroupsv2 hierarchy missing');
    const available = readFileSync(join(unified, 'cgroup.controllers'), 'utf8').split(/\s+/);
    for (const cg of cgroups) if (!available.includes(cg.controller)) die(`Cgroup controller ${cg.controller} is unavailable`);
    const location = join(unified, parentCgroup, id);
    mkdirSync(location, { recursive: true });
    const enabled = new Set<string>();
    for (const cg of cgroups) {
      if (!enabled.has(cg.controller)) enableInAncestors(dirname(location), cg.controller);
      enabled.add(cg.controller);
      writeln(join(location, cg.file), cg.value);
    }
    attachTo.add(join(location, 'cgroup.procs'));
  } else {
    const depth = parentCgroup.split('/').filter(Boolean).length;
    for (const cg of cgroups) {
      const mount = mounts.find((m) => m.ver === '' && m.options?.split(',').includes(cg.controller))?.dir;
      if (!mount) die(`Cgroup controller ${cg.controller} is unavailable`);
      const location = join(mount, parentCgroup, id);
      mkdirSync(location, { recursive: true });
      inheritFromParent(location, cg.file, depth);
      writeln(join(location, cg.file), cg.value);
      attachTo.add(join(location, 'tasks'));
    }
  }
  for (const file of attachTo) writeln(file, String(selfPid));
}

// 5. The jail's folders and devices (the real jailer does this after pivot_root into chrootDir).
for (const folder of ['', 'dev', 'dev/net', 'run']) {
  const path = join(chrootDir, folder);
  mkdirSync(path, { recursive: true });
  chmodSync(path, 0o700);
  chownSync(path, uid, gid);
}
for (const [device, major, minor] of [
  ['dev/net/tun', 10, 200],
  ['dev/kvm', 10, 232],
] as const) {
  const path = join(chrootDir, device);
  try {
    execFileSync(which('mknod'), ['-m', '600', path, 'c', String(major), String(minor)], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (error) {
    die(`Failed to create /${device} via mknod inside the jail: ${(error as Error).message}`);
  }
  chownSync(path, uid, gid);
}
record({ event: 'step', step: 'jail', chrootDir, uid, gid });

// 6. What the shell script runs: Firecracker, without environment, as uid:gid.
const startTimeUs = String(Math.floor(Date.now() * 1000));
const firecracker = [
  which('env'),
  '-i',
  `FAKE_FIRECRACKER_CHROOT=${chrootDir}`,
  ...(netns !== undefined ? [which('nsenter'), `--net=${netns}`, '--'] : []),
  which('setpriv'),
  `--reuid=${uid}`,
  `--regid=${gid}`,
  '--clear-groups',
  '--',
  jailedExec,
  '--id',
  id,
  '--start-time-us',
  startTimeUs,
  '--start-time-cpu-us',
  newPidNs ? '0' : String(Math.floor(process.cpuUsage().user)),
  '--parent-cpu-time-us',
  '0',
  ...args.extra,
]
  .map(shellQuote)
  .join(' ');
const fsize = limits.get('fsize');
const plan = [
  `cd ${shellQuote(chrootDir)} || exit 1`,
  `ulimit -n ${limits.get('no-file') ?? 2048} || exit 1`,
  ...(fsize !== undefined ? [`ulimit -f ${Math.ceil(fsize / 512)} || exit 1`] : []),
  ...(daemonize ? ['exec </dev/null >/dev/null 2>&1'] : []),
  ...(newPidNs
    ? [`${firecracker} &`, `set -C; echo $! > ${shellQuote(`${jailedExec}.pid`)} || exit 1`, 'exit 0']
    : [`exec ${firecracker}`]),
];
record({ event: 'exec', plan });
process.stdout.write(`${plan.join('\n')}\n`);
