// Staging a VM's jail before the jailer runs: the VM's files put at the root of
// `<chroot_base>/<exec name>/<id>/root`, hard-linked where possible (copied or bind-mounted across
// filesystems), the writable layer given to the VM's uid/gid. The jailed Firecracker sees nothing else.
import { constants as fsConstants } from 'node:fs';
import { chmod, chown, copyFile, link, mkdir, readdir, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { run } from '../../shared/exec.ts';
import type { VmLaunchSpec } from '../../vms/ports.ts';
import { errnoCode, JAIL_CACHE_DIR, JAIL_FILES, type JailIds } from './jail.ts';

export type StagedHow = 'linked' | 'copied' | 'bound';

/**
 * Hard-links `src` to `dest`; across filesystems, copies it once into `<cacheDir>` (keyed by the
 * source's identity and mtime, older copies of the same file dropped) and hard-links that copy.
 */
async function linkOrCopy(src: string, dest: string, cacheDir: string): Promise<StagedHow> {
  try {
    await link(src, dest);
    return 'linked';
  } catch (error) {
    if (errnoCode(error) !== 'EXDEV') throw new Error(`cannot hard-link ${src} to ${dest}: ${(error as Error).message}`);
  }
  const st = await stat(src);
  const name = basename(src);
  const key = `${name}.${st.dev}-${st.ino}-${st.size}-${Math.trunc(st.mtimeMs)}`;
  const cached = join(cacheDir, key);
  await mkdir(cacheDir, { recursive: true, mode: 0o755 });
  try {
    await stat(cached);
  } catch {
    const tmp = `${cached}.tmp-${process.pid}-${Date.now()}`;
    await copyFile(src, tmp, fsConstants.COPYFILE_FICLONE);
    await chmod(tmp, st.mode & 0o777);
    await rename(tmp, cached);
    // Older copies of this file: jails that use them keep their own hard link.
    for (const entry of await readdir(cacheDir)) {
      if (entry.startsWith(`${name}.`) && entry !== key && !entry.includes('.tmp-')) await unlink(join(cacheDir, entry)).catch(() => {});
    }
  }
  await link(cached, dest);
  return 'copied';
}

/** Hard-links the (writable) layer into the jail; across filesystems, bind-mounts it. */
export async function linkOrBind(src: string, dest: string): Promise<StagedHow> {
  try {
    await link(src, dest);
    return 'linked';
  } catch (error) {
    if (errnoCode(error) !== 'EXDEV') throw new Error(`cannot hard-link ${src} to ${dest}: ${(error as Error).message}`);
  }
  await writeFile(dest, '', { flag: 'wx', mode: 0o600 });
  await run('mount', ['--bind', src, dest]);
  return 'bound';
}

async function requireReadableByOthers(path: string, uid: number): Promise<void> {
  const st = await stat(path);
  if ((st.mode & 0o004) === 0) {
    throw new Error(
      `the jailed VMM (uid ${uid}) cannot read ${path} (mode ${(st.mode & 0o777).toString(8)}): make it readable by others (chmod o+r)`,
    );
  }
}

export interface StageInput {
  readonly chrootBaseDir: string;
  /** `<chroot_base>/<exec name>/<id>/root`. */
  readonly chrootDir: string;
  readonly spec: VmLaunchSpec;
  readonly ids: JailIds;
}

export interface StagedJail {
  readonly kernel: StagedHow;
  readonly initrd: StagedHow;
  readonly baseDisk: StagedHow;
  readonly layerDisk: StagedHow;
}

/**
 * Puts the VM's files at the root of its jail before the jailer runs: kernel, initrd and the
 * shared read-only base image hard-linked (or copied, across filesystems), readable by everyone as
 * they are; the VM's writable layer hard-linked (or bind-mounted) and given to the VM's uid/gid,
 * mode 0600. The jailer itself then chowns the chroot directory and creates /dev/kvm, /dev/net/tun.
 */
export async function stageJail(input: StageInput): Promise<StagedJail> {
  const { chrootDir, spec, ids } = input;
  // The directories above the jail's root as the jailer makes them (create_dir_all, 0755 less the
  // umask); the root itself is private (the jailer then gives it to the VM's uid).
  await mkdir(dirname(chrootDir), { recursive: true });
  await mkdir(chrootDir, { recursive: true, mode: 0o700 });
  const cacheDir = join(input.chrootBaseDir, JAIL_CACHE_DIR);
  const readOnly = async (src: string, name: string): Promise<StagedHow> => {
    await requireReadableByOthers(src, ids.uid);
    return linkOrCopy(src, join(chrootDir, name), cacheDir);
  };
  const kernel = await readOnly(spec.kernelPath, JAIL_FILES.kernel);
  const initrd = await readOnly(spec.initrdPath, JAIL_FILES.initrd);
  const baseDisk = await readOnly(spec.baseDiskPath, JAIL_FILES.baseDisk);
  await chown(spec.layerDiskPath, ids.uid, ids.gid);
  await chmod(spec.layerDiskPath, 0o600);
  const layerDisk = await linkOrBind(spec.layerDiskPath, join(chrootDir, JAIL_FILES.layerDisk));
  return { kernel, initrd, baseDisk, layerDisk };
}
