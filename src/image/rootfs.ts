// The shared, read-only base filesystem: Debian via mmdebstrap (cached as a tarball keyed by the
// recipe), then our additions (Node, init, guest services, recipe files), then
// `mkfs.ext4 -d` straight from the directory. No loop mounts anywhere.
import { chmod, chown, copyFile, cp, lstat, mkdir, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, posix } from 'node:path';
import { run } from '../shared/exec.ts';
import { shellQuote } from '../shared/shell.ts';
import { GUEST_CONTRACT_PATH, guestContractEnv } from '../guest/contract.ts';
import { installNodePty, type GuestBundle } from './bundle.ts';
import { recipeFileSource, type Recipe } from './recipe.ts';

/** Packages the image needs whatever the recipe says: init tools and Node's shared libraries. */
export const REQUIRED_PACKAGES: readonly string[] = ['bash', 'iproute2', 'util-linux', 'libstdc++6', 'libgcc-s1', 'coreutils', 'passwd'];

export const BASE_LABEL = 'clarateach-base';
export const LEARNER_UID = 1000;
export const LEARNER_NAME = 'learner';

/** Every package mmdebstrap installs for `recipe`, sorted and without duplicates. */
export function packageList(recipe: Recipe): string[] {
  const all = new Set([...REQUIRED_PACKAGES, ...recipe.packages]);
  if (recipe.learner.sudo) all.add('sudo');
  return [...all].sort();
}

/** The mmdebstrap command line writing a tarball of the recipe's Debian to `outTar`. */
export function mmdebstrapArgs(recipe: Recipe, outTar: string): string[] {
  const args = [
    `--variant=${recipe.variant}`,
    '--mode=root',
    '--format=tar',
    `--include=${packageList(recipe).join(',')}`,
    '--aptopt=Acquire::Retries "3"',
  ];
  for (const glob of recipe.excludePaths) args.push(`--dpkgopt=path-exclude=${glob}`);
  for (const glob of recipe.keepPaths) args.push(`--dpkgopt=path-include=${glob}`);
  args.push(
    `--customize-hook=chroot "$1" useradd --uid ${LEARNER_UID} --user-group --create-home --home-dir /home/${LEARNER_NAME} --shell ${shellQuote(recipe.learner.shell)} ${LEARNER_NAME}`,
  );
  if (recipe.learner.sudo) {
    args.push(
      `--customize-hook=echo '${LEARNER_NAME} ALL=(ALL) NOPASSWD:ALL' > "$1/etc/sudoers.d/${LEARNER_NAME}" && chmod 0440 "$1/etc/sudoers.d/${LEARNER_NAME}"`,
    );
  }
  // Host files mmdebstrap may leave behind; the guest init writes its own.
  args.push('--customize-hook=rm -f "$1/etc/resolv.conf" "$1/etc/hostname"');
  args.push(recipe.suite, outTar, ...recipe.sources);
  return args;
}

/**
 * Host path of guest path `guestPath` inside `root`, following symlinks of the guest tree as the
 * guest would (absolute links stay inside `root`). Only parent directories are resolved: the last
 * component is returned as is, so writing to it replaces a symlink rather than following it.
 */
export async function resolveInRoot(root: string, guestPath: string): Promise<string> {
  const resolveDir = async (path: string, depth: number): Promise<string> => {
    if (depth > 40) throw new Error(`too many symlinks resolving ${guestPath} in the guest tree`);
    let current = '/';
    for (const part of posix
      .normalize(path)
      .split('/')
      .filter((p) => p !== '')) {
      const candidate = posix.join(current, part);
      let isLink = false;
      try {
        isLink = (await lstat(join(root, candidate))).isSymbolicLink();
      } catch {
        isLink = false;
      }
      if (isLink) {
        const target = await readlink(join(root, candidate));
        current = await resolveDir(target.startsWith('/') ? target : posix.join(current, target), depth + 1);
      } else {
        current = candidate;
      }
    }
    return current;
  };
  const normalized = posix.normalize(guestPath);
  const parent = await resolveDir(posix.dirname(normalized), 0);
  return join(root, parent, posix.basename(normalized));
}

async function writeGuestFile(root: string, guestPath: string, data: string | Uint8Array, mode: number): Promise<string> {
  const target = await resolveInRoot(root, guestPath);
  await mkdir(dirname(target), { recursive: true });
  await rm(target, { force: true });
  await writeFile(target, data, { mode });
  await chmod(target, mode);
  return target;
}

async function copyGuestFile(root: string, source: string, guestPath: string, mode: number): Promise<void> {
  const target = await resolveInRoot(root, guestPath);
  await mkdir(dirname(target), { recursive: true });
  await rm(target, { force: true });
  await copyFile(source, target);
  await chmod(target, mode);
  await chown(target, 0, 0);
}

export interface CustomizeInput {
  readonly recipe: Recipe;
  readonly nodeBinary: string;
  readonly busybox: string;
  readonly initScript: string;
  readonly bundle: GuestBundle | undefined;
}

/** Adds ClaraTeach's files to an extracted Debian tree. */
export async function customizeTree(root: string, input: CustomizeInput): Promise<void> {
  await copyGuestFile(root, input.nodeBinary, '/usr/local/bin/node', 0o755);
  await copyGuestFile(root, input.busybox, '/opt/clarateach/bin/busybox', 0o755);
  await writeGuestFile(root, '/sbin/clarateach-init', input.initScript, 0o755);

  // Mount points through which the init reaches the base and the layer (see initrd-init).
  const stateDir = await resolveInRoot(root, '/var/lib/clarateach');
  await mkdir(join(stateDir, 'base'), { recursive: true });
  await mkdir(join(stateDir, 'layer'), { recursive: true });
  await chmod(stateDir, 0o700);

  await writeGuestFile(root, '/etc/fstab', '# Filesystems are mounted by the ClaraTeach initramfs and init.\n', 0o644);
  await writeGuestFile(root, '/etc/hostname', 'clarateach\n', 0o644);
  await writeGuestFile(root, '/etc/hosts', '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n', 0o644);

  if (input.bundle) {
    const guestDir = await resolveInRoot(root, '/opt/clarateach/guest/main.mjs').then(dirname);
    await mkdir(guestDir, { recursive: true });
    await writeFile(join(guestDir, 'main.mjs'), input.bundle.code, { mode: 0o644 });
    await installNodePty(input.bundle, guestDir);
    await run('chown', ['-R', '0:0', guestDir]);
    await run('chmod', ['-R', 'u+rwX,go+rX,go-w', guestDir]);
  }

  for (const file of input.recipe.files) {
    const source = recipeFileSource(input.recipe, file);
    const target = await resolveInRoot(root, file.dest);
    const st = await stat(source).catch(() => undefined);
    if (!st) throw new Error(`${input.recipe.path}: files: ${source} does not exist`);
    await mkdir(dirname(target), { recursive: true });
    await rm(target, { recursive: true, force: true });
    await cp(source, target, { recursive: true, verbatimSymlinks: true });
    const [uid, gid] = (file.owner ?? '0:0').split(':').map(Number);
    await run('chown', ['-R', '-h', `${uid ?? 0}:${gid ?? 0}`, target]);
    if (file.mode !== undefined && st.isFile()) await chmod(target, parseInt(file.mode, 8));
  }

  // After the recipe's files, so none of them (e.g. a whole /etc/clarateach) can replace it.
  await writeGuestFile(root, GUEST_CONTRACT_PATH, guestContractEnv(), 0o644);
}

/** Runs the guest's Node inside the tree (chroot): proves its libraries and node-pty load. */
export async function verifyTree(root: string, withBundle: boolean): Promise<string> {
  const script = withBundle
    ? "require('/opt/clarateach/guest/node_modules/node-pty'); console.log(process.version)"
    : 'console.log(process.version)';
  try {
    const { stdout } = await run('chroot', [root, '/usr/local/bin/node', '-e', script], { timeoutMs: 60_000 });
    return stdout.trim();
  } catch (error) {
    throw new Error(`the guest cannot run its Node (or load node-pty): ${(error as Error).message}`);
  }
}

export interface TreeSize {
  readonly bytes: number;
  readonly inodes: number;
}

export async function measureTree(root: string): Promise<TreeSize> {
  const { stdout: du } = await run('du', ['-s', '-B1', '--apparent-size', root], { timeoutMs: 10 * 60_000 });
  const { stdout: count } = await run('sh', ['-c', 'find "$1" -xdev | wc -l', 'sh', root], { timeoutMs: 10 * 60_000 });
  return { bytes: Number(du.split(/\s/)[0]), inodes: Number(count.trim()) };
}

export interface Ext4Plan {
  readonly sizeBytes: number;
  readonly inodes: number;
}

/** Filesystem size for a tree: content plus block slack and metadata, plus the recipe's margin. */
export function planExt4(tree: TreeSize, marginMb: number): Ext4Plan {
  const inodes = Math.ceil(tree.inodes * 1.1) + 1024;
  // Every file wastes half a 4 KiB block on average; inode tables take 256 bytes per inode.
  const estimate = tree.bytes * 1.05 + tree.inodes * 2048 + inodes * 256 + marginMb * 1024 * 1024;
  const mb = Math.ceil(estimate / (1024 * 1024));
  return { sizeBytes: mb * 1024 * 1024, inodes };
}

/** `mkfs.ext4 -d`: the tree becomes a fresh image file at `out` (no journal: it is read-only). */
export async function makeExt4(root: string, out: string, plan: Ext4Plan, label = BASE_LABEL): Promise<void> {
  await rm(out, { force: true });
  await writeFile(out, '');
  await run('truncate', ['-s', String(plan.sizeBytes), out]);
  await run(
    'mkfs.ext4',
    ['-q', '-F', '-L', label, '-d', root, '-N', String(plan.inodes), '-m', '0', '-O', '^has_journal', '-E', 'lazy_itable_init=0', out],
    { timeoutMs: 30 * 60_000 },
  );
}
