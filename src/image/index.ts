// Builds the guest image set in an images directory:
//   vmlinux       uncompressed ELF kernel (Firecracker; QEMU microvm boots it through PVH)
//   initrd.img    busybox initramfs that stacks the base and the VM's layer with overlayfs
//   rootfs.ext4   the shared read-only Debian base (label clarateach-base)
//   manifest.json what was built from what (ImageManifest)
// Each stage is skipped when the hash of its inputs matches the manifest and its output is still
// there, so a rebuild with nothing changed takes seconds. Outputs are replaced atomically.
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { run } from '../shared/exec.ts';
import { bundleGuest, type GuestBundle } from './bundle.ts';
import { buildInitrd } from './initrd.ts';
import {
  bzImagePath,
  downloadKernelPackage,
  extractVmlinux,
  resolveKernelPackage,
  unpackKernelPackage,
  type KernelPackage,
} from './kernel.ts';
import { loadRecipe, recipeFileSource, type Recipe } from './recipe.ts';
import { customizeTree, makeExt4, measureTree, mmdebstrapArgs, packageList, planExt4, verifyTree, BASE_LABEL } from './rootfs.ts';
import {
  exists,
  formatBytes,
  formatMs,
  hashParts,
  hashTree,
  produceAtomic,
  readJson,
  removeStaleTemps,
  sha256File,
  tempPathFor,
  writeFileAtomic,
} from './util.ts';
import { IMAGE_FILES } from './layout.ts';
import { lockDir } from './build-lock.ts';
import { guestContractEnv } from '../guest/contract.ts';

export { BASE_LABEL } from './rootfs.ts';
export { defaultRecipePath, loadRecipe, type Recipe } from './recipe.ts';
export { IMAGE_FILES, imagePaths } from './layout.ts';

/** Bump when a stage's code changes in a way that must rebuild existing images. */
const BUILDER_VERSION = { kernel: '1', initrd: '1', debian: '1', rootfs: '1' } as const;

export type StageName = keyof typeof BUILDER_VERSION;

export interface ImageFileInfo {
  readonly name: string;
  readonly bytes: number;
  readonly sha256: string;
  readonly mtimeMs: number;
}

export interface StageRecord {
  /** Hash of everything the stage's output depends on. */
  readonly key: string;
  readonly builtAt: string;
  readonly durationMs: number;
}

export interface ImageManifest {
  readonly format: 1;
  /** When this manifest was written (the last build, even if it rebuilt nothing). */
  readonly builtAt: string;
  readonly buildDurationMs: number;
  /** Hash over every stage's input key: equal hashes mean equal images. */
  readonly inputHash: string;
  readonly recipePath: string;
  readonly kernel: {
    readonly package: string;
    readonly version: string;
    /** `uname -r` of the guest. */
    readonly release: string;
    /** Compression of the bzImage payload vmlinux was extracted from. */
    readonly compression: string;
    /** vmlinux has the PVH entry note, so QEMU boots the ELF directly. */
    readonly pvh: boolean;
  };
  readonly initrd: { readonly modules: readonly string[]; readonly builtin: readonly string[] };
  readonly rootfs: {
    readonly label: string;
    readonly packages: readonly string[];
    readonly contentBytes: number;
    readonly inodes: number;
    /** `process.version` of the Node copied to /usr/local/bin/node. */
    readonly nodeVersion: string;
    /** The workspace services bundle is in /opt/clarateach/guest. */
    readonly guestServices: boolean;
  };
  /** The template catalog publishes the boot files only while their sizes and mtimes are these. */
  readonly files: { readonly kernel: ImageFileInfo; readonly initrd: ImageFileInfo; readonly rootfs: ImageFileInfo };
  readonly stages: Readonly<Record<StageName, StageRecord>>;
}

export interface BuildImageOptions {
  readonly imagesDir: string;
  /** Default: images/recipe.json of this repository. */
  readonly recipePath?: string;
  /** Rebuild every stage (downloaded packages are still reused). */
  readonly force?: boolean;
  readonly onProgress?: (msg: string) => void;
  /** Downloads, the unpacked kernel and the Debian tarball; default `<imagesDir>/.cache`. */
  readonly cacheDir?: string;
}

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const INIT_DIR = join(REPO_ROOT, 'src/guest/init');
const GUEST_ENTRY = join(REPO_ROOT, 'src/guest/main.ts');
const BUSYBOX_CANDIDATES = ['/bin/busybox', '/usr/bin/busybox'];

export async function readImageManifest(imagesDir: string): Promise<ImageManifest | undefined> {
  const raw = await readJson(join(imagesDir, IMAGE_FILES.manifest));
  if (typeof raw !== 'object' || raw === null || (raw as { format?: unknown }).format !== 1) return undefined;
  return raw as ImageManifest;
}

async function fileInfo(dir: string, name: string): Promise<ImageFileInfo> {
  const path = join(dir, name);
  const st = await stat(path);
  return { name, bytes: st.size, sha256: await sha256File(path), mtimeMs: st.mtimeMs };
}

async function unchanged(dir: string, info: ImageFileInfo | undefined): Promise<boolean> {
  if (!info) return false;
  try {
    const st = await stat(join(dir, info.name));
    return st.size === info.bytes && st.mtimeMs === info.mtimeMs;
  } catch {
    return false;
  }
}

/** A statically linked busybox (the initramfs has no libc), e.g. from busybox-static. */
async function findStaticBusybox(): Promise<string> {
  for (const candidate of BUSYBOX_CANDIDATES) {
    if (!(await exists(candidate))) continue;
    const elf = await readFile(candidate);
    if (elf.readUInt32BE(0) !== 0x7f454c46) continue;
    const phoff = Number(elf.readBigUInt64LE(32));
    const phentsize = elf.readUInt16LE(54);
    const phnum = elf.readUInt16LE(56);
    let dynamic = false;
    for (let i = 0; i < phnum; i++) if (elf.readUInt32LE(phoff + i * phentsize) === 3 /* PT_INTERP */) dynamic = true;
    if (!dynamic) return candidate;
  }
  throw new Error('no statically linked busybox found: apt-get install busybox-static');
}

async function recipeFilesHash(recipe: Recipe): Promise<string> {
  const parts: Record<string, string> = {};
  for (const [i, file] of recipe.files.entries()) {
    const source = recipeFileSource(recipe, file);
    const st = await stat(source).catch(() => undefined);
    if (!st) throw new Error(`${recipe.path}: files[${i}].src: ${source} does not exist`);
    const content = st.isDirectory() ? await hashTree(source) : await sha256File(source);
    parts[String(i)] = `${file.dest}|${file.mode ?? ''}|${file.owner ?? ''}|${content}`;
  }
  return hashParts(parts);
}

function sha256(text: string): string {
  return createHash('sha256').update(text).digest('hex');
}

export async function buildImage(opts: BuildImageOptions): Promise<ImageManifest> {
  const started = Date.now();
  const progress = opts.onProgress ?? (() => {});
  const imagesDir = resolve(opts.imagesDir);
  const cacheDir = resolve(opts.cacheDir ?? join(imagesDir, '.cache'));
  await mkdir(imagesDir, { recursive: true });
  await mkdir(cacheDir, { recursive: true });
  // Always images dir first, then cache dir: two builds sharing a cache cannot deadlock.
  const unlockImages = await lockDir(imagesDir, progress);
  try {
    const unlockCache = await lockDir(cacheDir, progress);
    try {
      return await buildLocked(opts, imagesDir, cacheDir, started, progress);
    } finally {
      await unlockCache();
    }
  } finally {
    await unlockImages();
  }
}

async function buildLocked(
  opts: BuildImageOptions,
  imagesDir: string,
  cacheDir: string,
  started: number,
  progress: (msg: string) => void,
): Promise<ImageManifest> {
  await removeStaleTemps(imagesDir);
  await removeStaleTemps(join(cacheDir, 'kernel'));
  await removeStaleTemps(join(cacheDir, 'debian'));

  const recipe = await loadRecipe(opts.recipePath);
  progress(`recipe ${recipe.path}`);
  const previous = opts.force ? undefined : await readImageManifest(imagesDir);

  // ---- inputs -----------------------------------------------------------------------------
  const kernelPkg: KernelPackage = await resolveKernelPackage(recipe.kernelPackage);
  const initrdScript = await readFile(join(INIT_DIR, 'initrd-init'), 'utf8');
  const initScript = await readFile(join(INIT_DIR, 'clarateach-init'), 'utf8');
  const busybox = await findStaticBusybox();
  const busyboxHash = await sha256File(busybox);
  const nodeHash = await sha256File(process.execPath);
  const bundleStart = Date.now();
  const bundle: GuestBundle | undefined = await bundleGuest(GUEST_ENTRY, REPO_ROOT);
  progress(
    bundle
      ? `[bundle] guest services bundled from src/guest/main.ts (${formatBytes(bundle.code.length)}) in ${formatMs(Date.now() - bundleStart)}`
      : '[bundle] src/guest/main.ts does not exist yet: the image will have no workspace services',
  );
  const packages = packageList(recipe);

  const keys: Record<StageName, string> = {
    kernel: hashParts({ builder: BUILDER_VERSION.kernel, name: kernelPkg.name, version: kernelPkg.version }),
    initrd: '',
    debian: hashParts({
      builder: BUILDER_VERSION.debian,
      suite: recipe.suite,
      sources: recipe.sources.join('\n'),
      variant: recipe.variant,
      packages: packages.join(','),
      exclude: recipe.excludePaths.join('\n'),
      keep: recipe.keepPaths.join('\n'),
      learner: JSON.stringify(recipe.learner),
    }),
    rootfs: '',
  };
  keys.initrd = hashParts({
    builder: BUILDER_VERSION.initrd,
    kernel: keys.kernel,
    script: sha256(initrdScript),
    busybox: busyboxHash,
    modules: recipe.initrdModules.join(','),
  });
  keys.rootfs = hashParts({
    builder: BUILDER_VERSION.rootfs,
    debian: keys.debian,
    init: sha256(initScript),
    contract: sha256(guestContractEnv()),
    node: nodeHash,
    busybox: busyboxHash,
    bundle: bundle?.hash ?? 'none',
    files: await recipeFilesHash(recipe),
    margin: String(recipe.rootfsMarginMb),
  });
  const inputHash = hashParts(keys);

  const stages: Partial<Record<StageName, StageRecord>> = {};
  const fresh = async (stage: StageName, file?: ImageFileInfo): Promise<boolean> =>
    previous !== undefined && previous.stages[stage]?.key === keys[stage] && (file === undefined || (await unchanged(imagesDir, file)));
  const record = (stage: StageName, t0: number): void => {
    stages[stage] = { key: keys[stage], builtAt: new Date().toISOString(), durationMs: Date.now() - t0 };
  };

  // The unpacked kernel package, fetched only when a stage needs it.
  let kernelTree: { root: string; release: string } | undefined;
  const ensureKernelTree = async (): Promise<{ root: string; release: string }> => {
    if (kernelTree) return kernelTree;
    const dir = join(cacheDir, 'kernel');
    const t0 = Date.now();
    progress(`[kernel] fetching ${kernelPkg.name} ${kernelPkg.version}`);
    const deb = await downloadKernelPackage(kernelPkg, dir);
    const root = join(dir, `${kernelPkg.name}_${kernelPkg.version}`);
    const release = await unpackKernelPackage(deb, root);
    progress(`[kernel] ${formatBytes((await stat(deb)).size)} package unpacked, release ${release}, in ${formatMs(Date.now() - t0)}`);
    kernelTree = { root, release };
    return kernelTree;
  };

  // ---- kernel -------------------------------------------------------------------------------
  let kernelMeta: ImageManifest['kernel'];
  let kernelFile: ImageFileInfo;
  if (previous && (await fresh('kernel', previous.files.kernel))) {
    kernelMeta = previous.kernel;
    kernelFile = previous.files.kernel;
    stages.kernel = previous.stages.kernel;
    progress(`[kernel] up to date (${kernelPkg.name} ${kernelPkg.version})`);
  } else {
    const t0 = Date.now();
    const tree = await ensureKernelTree();
    const extracted = await extractVmlinux(bzImagePath(tree.root, tree.release));
    await writeFileAtomic(join(imagesDir, IMAGE_FILES.kernel), extracted.vmlinux);
    kernelFile = await fileInfo(imagesDir, IMAGE_FILES.kernel);
    kernelMeta = {
      package: kernelPkg.name,
      version: kernelPkg.version,
      release: tree.release,
      compression: extracted.compression,
      pvh: extracted.info.pvh,
    };
    record('kernel', t0);
    progress(
      `[kernel] ${IMAGE_FILES.kernel} ${formatBytes(kernelFile.bytes)} (from ${extracted.compression} bzImage, ${extracted.info.pvh ? 'PVH entry' : 'no PVH entry'}) in ${formatMs(Date.now() - t0)}`,
    );
  }

  // ---- initrd -------------------------------------------------------------------------------
  let initrdMeta: ImageManifest['initrd'];
  let initrdFile: ImageFileInfo;
  if (previous && (await fresh('initrd', previous.files.initrd))) {
    initrdMeta = previous.initrd;
    initrdFile = previous.files.initrd;
    stages.initrd = previous.stages.initrd;
    progress('[initrd] up to date');
  } else {
    const t0 = Date.now();
    const tree = await ensureKernelTree();
    const result = await buildInitrd({
      kernelRoot: tree.root,
      release: tree.release,
      modules: recipe.initrdModules,
      initScript: initrdScript,
      busybox,
    });
    await writeFileAtomic(join(imagesDir, IMAGE_FILES.initrd), result.data);
    initrdFile = await fileInfo(imagesDir, IMAGE_FILES.initrd);
    initrdMeta = { modules: result.loadOrder, builtin: result.builtin };
    record('initrd', t0);
    progress(
      `[initrd] ${formatBytes(initrdFile.bytes)}: busybox + ${result.loadOrder.length} modules (built in: ${result.builtin.join(', ') || 'none'}) in ${formatMs(Date.now() - t0)}`,
    );
  }

  // ---- debian (mmdebstrap tarball, cached) ----------------------------------------------------
  const debianDir = join(cacheDir, 'debian');
  await mkdir(debianDir, { recursive: true });
  const debianTar = join(debianDir, `${keys.debian.slice(0, 24)}.tar`);
  const rootfsUpToDate = previous !== undefined && (await fresh('rootfs', previous.files.rootfs));
  if (!opts.force && (await exists(debianTar))) {
    stages.debian =
      previous?.stages.debian?.key === keys.debian
        ? previous.stages.debian
        : { key: keys.debian, builtAt: new Date().toISOString(), durationMs: 0 };
    progress(`[debian] up to date (${formatBytes((await stat(debianTar)).size)} tarball cached)`);
  } else if (rootfsUpToDate && previous?.stages.debian?.key === keys.debian) {
    // The base image is current; its tarball was cleaned away. Nothing needs it now.
    stages.debian = previous.stages.debian;
    progress('[debian] up to date (rootfs current, tarball not cached)');
  } else {
    const t0 = Date.now();
    progress(`[debian] mmdebstrap ${recipe.suite} (${recipe.variant}, ${packages.length} packages): this takes a few minutes`);
    await produceAtomic(debianTar, async (temp) => {
      await run('mmdebstrap', ['--quiet', ...mmdebstrapArgs(recipe, temp)], { timeoutMs: 60 * 60_000 });
    });
    for (const name of await readdir(debianDir)) {
      if (name.endsWith('.tar') && join(debianDir, name) !== debianTar) await rm(join(debianDir, name), { force: true });
    }
    record('debian', t0);
    progress(`[debian] ${formatBytes((await stat(debianTar)).size)} tarball in ${formatMs(Date.now() - t0)}`);
  }

  // ---- rootfs ---------------------------------------------------------------------------------
  let rootfsMeta: ImageManifest['rootfs'];
  let rootfsFile: ImageFileInfo;
  if (previous && rootfsUpToDate) {
    rootfsMeta = previous.rootfs;
    rootfsFile = previous.files.rootfs;
    stages.rootfs = previous.stages.rootfs;
    progress('[rootfs] up to date');
  } else {
    const t0 = Date.now();
    // Next to the output (same filesystem); removeStaleTemps() clears one a crash left behind.
    const staging = tempPathFor(join(imagesDir, 'rootfs-staging'));
    await mkdir(staging, { recursive: true });
    try {
      await run('tar', ['-xf', debianTar, '-C', staging, '--numeric-owner', '-p', '--xattrs', '--xattrs-include=*'], {
        timeoutMs: 30 * 60_000,
      });
      await customizeTree(staging, { recipe, nodeBinary: process.execPath, busybox, initScript, bundle });
      const nodeVersion = await verifyTree(staging, bundle !== undefined);
      const size = await measureTree(staging);
      const plan = planExt4(size, recipe.rootfsMarginMb);
      progress(`[rootfs] tree ${formatBytes(size.bytes)} in ${size.inodes} inodes -> ext4 of ${formatBytes(plan.sizeBytes)}`);
      await produceAtomic(join(imagesDir, IMAGE_FILES.rootfs), (temp) => makeExt4(staging, temp, plan));
      rootfsFile = await fileInfo(imagesDir, IMAGE_FILES.rootfs);
      rootfsMeta = {
        label: BASE_LABEL,
        packages,
        contentBytes: size.bytes,
        inodes: size.inodes,
        nodeVersion,
        guestServices: bundle !== undefined,
      };
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
    record('rootfs', t0);
    progress(
      `[rootfs] ${IMAGE_FILES.rootfs} ${formatBytes(rootfsFile.bytes)} (node ${rootfsMeta.nodeVersion}) in ${formatMs(Date.now() - t0)}`,
    );
  }

  const manifest: ImageManifest = {
    format: 1,
    builtAt: new Date().toISOString(),
    buildDurationMs: Date.now() - started,
    inputHash,
    recipePath: recipe.path,
    kernel: kernelMeta,
    initrd: initrdMeta,
    rootfs: rootfsMeta,
    files: { kernel: kernelFile, initrd: initrdFile, rootfs: rootfsFile },
    stages: stages as Record<StageName, StageRecord>,
  };
  // Last: until it describes them, the catalog takes the new files for a build that stopped halfway.
  await writeFileAtomic(join(imagesDir, IMAGE_FILES.manifest), `${JSON.stringify(manifest, null, 2)}\n`);
  progress(`done in ${formatMs(manifest.buildDurationMs)} (input hash ${inputHash.slice(0, 12)})`);
  return manifest;
}
