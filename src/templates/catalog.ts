// Templates (named guest images) and their immutable builds, on disk:
//   IMAGES_DIR/{vmlinux,initrd.img,rootfs.ext4}   the default template's current build (the guide's paths)
//   IMAGES_DIR/templates/<name>/…                  another template's current build
//   IMAGES_DIR/builds/<name>/<build id>/…          every build a VM was made from: hard links, no copies
// `clarateach image build` writes new files and renames them into place, so a build once linked
// into builds/ never changes: a VM boots again from exactly the files it was made from. It writes
// manifest.json last: files unlike it are a build that is running, failed or was killed, never
// published (a create gets the newest published build meanwhile).
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, statSync, type Stats } from 'node:fs';
import { copyFile, link, mkdir, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { IMAGE_FILES, imagePaths, recordedBootFiles, type RecordedFile } from '../image/layout.ts';
import { isBeingBuilt } from '../image/build-lock.ts';
import { VmError } from '../vms/errors.ts';
import { DEFAULT_TEMPLATE, TEMPLATE_NAME_PATTERN } from '../vms/model.ts';
import type { ImageBuild, ImageCatalog, ImagePaths, TemplateInfo } from '../vms/ports.ts';

const TEMPLATE_NAME = new RegExp(TEMPLATE_NAME_PATTERN);
const BOOT_FILES = [IMAGE_FILES.kernel, IMAGE_FILES.initrd, IMAGE_FILES.rootfs] as const;
/** The manifest's key of each of BOOT_FILES, in the same order. */
const MANIFEST_KEYS = ['kernel', 'initrd', 'rootfs'] as const;
/** A publish's folder until it is renamed to its build id: `.new-<pid>-<random>`. */
const PUBLISHING = /^\.new-(?:(\d+)-)?/;
/** Builds made before templates existed: their VMs use the template's files as they are. */
const LEGACY_BUILD = '';

export function isTemplateName(name: string): boolean {
  return TEMPLATE_NAME.test(name);
}

/** Which files these are: a rebuild renames new files into place, so new inodes mean a new build. */
function fingerprintOf(stats: readonly Stats[]): string {
  return stats.map((s) => `${s.dev}:${s.ino}`).join('/');
}

/**
 * The boot files' stats, or undefined when one is missing. Synchronous: three stats of local files
 * take microseconds, three round trips through the thread pool a millisecond or more on every
 * create.
 */
function bootFileStats(dir: string): Stats[] | undefined {
  const stats = BOOT_FILES.map((name) => statSync(join(dir, name), { throwIfNoEntry: false }));
  return stats.every((s) => s !== undefined) ? stats : undefined;
}

function missingFiles(dir: string): string[] {
  return BOOT_FILES.filter((name) => !existsSync(join(dir, name)));
}

function buildHint(template: string): string {
  return `run clarateach image build${template === DEFAULT_TEMPLATE ? '' : ` --template ${template}`}`;
}

/**
 * A template nobody built is not found (404); the default template always exists, so its missing
 * files are the agent's failure (500 create_failed, as the operators' guide says), as are the
 * missing files of a template that was built.
 */
function missingBuild(template: string, dir: string): VmError {
  const hint = buildHint(template);
  if (template !== DEFAULT_TEMPLATE && !existsSync(dir)) {
    return new VmError('template_not_found', `template "${template}" has no build (no ${dir}): ${hint}`);
  }
  const missing = missingFiles(dir).map((name) => join(dir, name));
  return new VmError('create_failed', `images: ${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} missing: ${hint}`);
}

/**
 * `20261203T071200-3f2a9c1e`: when its rootfs was written, then a digest of which files it is.
 * Only the files decide it (not the manifest, which every build run rewrites), so the same files
 * are the same build in every process.
 */
function buildIdFor(stats: readonly Stats[]): string {
  const stamp = (stats[2]?.mtime ?? new Date(0))
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, '');
  const digest = createHash('sha256').update(fingerprintOf(stats)).digest('hex').slice(0, 8);
  return `${stamp}-${digest}`;
}

/** Whether a process with this pid exists (EPERM: it does, as another user). */
function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * What a template's work directory holds: a whole build to publish, a build not finished (being
 * built, or failed or killed halfway: creates get the newest published build), or missing files.
 */
type WorkFiles =
  | { readonly state: 'whole'; readonly stats: Stats[] }
  | { readonly state: 'unfinished'; readonly building: boolean; readonly why: string }
  | { readonly state: 'missing' };

async function linkOrCopy(from: string, to: string): Promise<void> {
  try {
    await link(from, to);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'EXDEV' && code !== 'EPERM') throw error;
    await copyFile(from, to);
  }
}

export class TemplateCatalog implements ImageCatalog {
  /**
   * Templates whose current build is being looked up or published right now: the build a create
   * is handed has no VM record yet, so a prune meanwhile leaves those templates alone. (From the
   * lookup's return to the record there is no await: the create reserves its seat at once.)
   */
  private readonly lookingUp = new Map<string, number>();
  /** Each manifest read, by path, with the stat it was read at: parsed again only once rewritten. */
  private readonly manifests = new Map<string, { readonly at: string; readonly files: readonly RecordedFile[] | undefined }>();
  /** Per template, the unfinished build last warned about: told once, not on every create. */
  private readonly warned = new Map<string, string>();

  /**
   * `warn` tells the operator why a template's files are not published (default: a line on
   * stderr, which the service's journal keeps).
   */
  constructor(
    private readonly imagesDir: string,
    private readonly warn: (message: string) => void = (message) => void process.stderr.write(`clarateach: ${message}\n`),
  ) {}

  /** Where `clarateach image build --template NAME` writes, and the catalog finds, a template's current build. */
  workDir(template: string): string {
    return template === DEFAULT_TEMPLATE ? this.imagesDir : join(this.imagesDir, 'templates', template);
  }

  private buildsDir(template: string): string {
    return join(this.imagesDir, 'builds', template);
  }

  private pathsOf(template: string, buildId: string): ImagePaths {
    return imagePaths(join(this.buildsDir(template), buildId));
  }

  async current(template: string): Promise<ImageBuild> {
    if (!isTemplateName(template)) throw new VmError('invalid_field', `template must match ${TEMPLATE_NAME_PATTERN}`);
    const dir = this.workDir(template);
    this.lookingUp.set(template, (this.lookingUp.get(template) ?? 0) + 1);
    try {
      const work = await this.workFiles(template);
      if (work.state === 'missing') throw missingBuild(template, dir);
      if (work.state === 'whole') {
        const buildId = await this.publish(template, dir, work.stats);
        return { template, buildId, paths: this.pathsOf(template, buildId) };
      }
      // Half old, half new files (mid-build, or a build that failed or was killed) boot a kernel
      // with another build's initrd or rootfs: a create gets the last whole build.
      const last = await this.newestPublished(template);
      if (last !== undefined) return { template, buildId: last, paths: this.pathsOf(template, last) };
      if (work.building) {
        throw new VmError('template_building', `template "${template}" is being built; try again when its image build finishes`);
      }
      throw new VmError('create_failed', `images: ${work.why}: ${buildHint(template)}`);
    } finally {
      const left = (this.lookingUp.get(template) ?? 1) - 1;
      if (left === 0) this.lookingUp.delete(template);
      else this.lookingUp.set(template, left);
    }
  }

  /** Whether the template's files are a whole build; says why not once per unfinished build. */
  private async workFiles(template: string): Promise<WorkFiles> {
    const dir = this.workDir(template);
    if (await isBeingBuilt(dir)) return { state: 'unfinished', building: true, why: `template "${template}" is being built` };
    const stats = bootFileStats(dir);
    if (!stats) return { state: 'missing' };
    const why = this.unlikeManifest(dir, stats);
    if (why === undefined) {
      this.warned.delete(template);
      return { state: 'whole', stats };
    }
    if (this.warned.get(template) !== why) {
      this.warned.set(template, why);
      const last = await this.newestPublished(template);
      this.warn(
        `template "${template}": ${why}; ${last === undefined ? 'creates fail' : `creates get its last whole build ${last}`} until ${buildHint(template)} finishes`,
      );
    }
    return { state: 'unfinished', building: false, why };
  }

  /**
   * Why the files are not the build manifest.json (written last) describes, or undefined when they
   * are. Without a manifest no build wrote them (they were put there by hand): nothing to hold
   * them against.
   */
  private unlikeManifest(dir: string, stats: readonly Stats[]): string | undefined {
    const path = join(dir, IMAGE_FILES.manifest);
    const st = statSync(path, { throwIfNoEntry: false });
    if (!st) return undefined;
    // A build renames a new manifest into place: another inode or mtime is another manifest.
    const at = `${st.dev}:${st.ino}:${st.mtimeMs}:${st.size}`;
    let read = this.manifests.get(path);
    if (read?.at !== at) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(readFileSync(path, 'utf8'));
      } catch {
        parsed = undefined;
      }
      const files = recordedBootFiles(parsed);
      read = { at, files: files && MANIFEST_KEYS.map((key) => files[key]) };
      this.manifests.set(path, read);
    }
    const recorded = read.files;
    if (!recorded) return `${path} records no boot files (an image build failed or was killed)`;
    const unlike = BOOT_FILES.filter((_, i) => stats[i]?.size !== recorded[i]?.bytes || stats[i]?.mtimeMs !== recorded[i]?.mtimeMs);
    if (unlike.length === 0) return undefined;
    const names = unlike.map((name) => join(dir, name)).join(', ');
    return `${names} ${unlike.length === 1 ? 'is not the file' : 'are not the files'} ${path} describes (an image build failed, was killed, or was replaced by hand)`;
  }

  /** The build a create of the template gets now (published or not yet), if any. */
  private async currentId(template: string): Promise<string | undefined> {
    const work = await this.workFiles(template);
    if (work.state === 'whole') return buildIdFor(work.stats);
    return work.state === 'unfinished' ? this.newestPublished(template) : undefined;
  }

  /** Links the template's current files into builds/ once (a build's id says which files it is). */
  private async publish(template: string, dir: string, stats: readonly Stats[]): Promise<string> {
    const buildId = buildIdFor(stats);
    const target = join(this.buildsDir(template), buildId);
    if (existsSync(join(target, IMAGE_FILES.rootfs))) return buildId;
    // The pid tells a prune whether a leftover's publish may still be under way.
    const temp = join(this.buildsDir(template), `.new-${process.pid}-${randomBytes(6).toString('hex')}`);
    await mkdir(temp, { recursive: true });
    try {
      const files = existsSync(join(dir, IMAGE_FILES.manifest)) ? [...BOOT_FILES, IMAGE_FILES.manifest] : [...BOOT_FILES];
      for (const name of files) await linkOrCopy(join(dir, name), join(temp, name));
      await rename(temp, target).catch((error: NodeJS.ErrnoException) => {
        // Published meanwhile by a concurrent create: the same files either way.
        if (error.code !== 'ENOTEMPTY' && error.code !== 'EEXIST') throw error;
      });
    } finally {
      await rm(temp, { recursive: true, force: true });
    }
    return buildId;
  }

  /** The newest build already published: what a create gets while the template is being rebuilt. */
  private async newestPublished(template: string): Promise<string | undefined> {
    const ids = (await this.dirNames(this.buildsDir(template))).filter((id) =>
      existsSync(join(this.buildsDir(template), id, IMAGE_FILES.rootfs)),
    );
    return ids.sort().at(-1);
  }

  paths(template: string, buildId: string): ImagePaths {
    return buildId === LEGACY_BUILD ? imagePaths(this.workDir(template)) : this.pathsOf(template, buildId);
  }

  async prune(inUse: () => ReadonlySet<string>): Promise<string[]> {
    const removed: string[] = [];
    for (const template of await this.dirNames(join(this.imagesDir, 'builds'))) {
      await this.removeLeftovers(template);
      const current = await this.currentId(template);
      for (const buildId of await this.dirNames(this.buildsDir(template))) {
        if (buildId === current || this.lookingUp.has(template) || inUse().has(`${template}/${buildId}`)) continue;
        await rm(join(this.buildsDir(template), buildId), { recursive: true, force: true });
        removed.push(`${template}/${buildId}`);
      }
    }
    return removed;
  }

  /**
   * Removes the `.new-…` folders of publishes that crashed (their process is gone): their hard
   * links would keep an old build's files, a whole rootfs, on disk for good.
   */
  private async removeLeftovers(template: string): Promise<void> {
    const dir = this.buildsDir(template);
    for (const name of await readdir(dir).catch(() => [])) {
      const match = PUBLISHING.exec(name);
      if (!match) continue;
      // A pid that still runs may be publishing right now (this agent, or an image build); a
      // name without one is from before pids were in it.
      if (match[1] !== undefined && Number(match[1]) > 0 && isRunning(Number(match[1]))) continue;
      await rm(join(dir, name), { recursive: true, force: true });
    }
  }

  async list(): Promise<TemplateInfo[]> {
    const names = new Set([
      ...(bootFileStats(this.imagesDir) ? [DEFAULT_TEMPLATE] : []),
      ...(await this.dirNames(join(this.imagesDir, 'templates'))),
      ...(await this.dirNames(join(this.imagesDir, 'builds'))),
    ]);
    const templates: TemplateInfo[] = [];
    for (const name of [...names].sort()) {
      const current = (await this.currentId(name)) ?? null;
      const ids = new Set(await this.dirNames(this.buildsDir(name)));
      if (current !== null) ids.add(current);
      // Oldest first, the current build last.
      const ordered = [...ids].filter((id) => id !== current).sort();
      if (current !== null) ordered.push(current);
      const builds = ordered.map((id) => ({ id, builtAt: builtAtOf(id), current: id === current }));
      templates.push({ name, currentBuild: current, builds });
    }
    return templates;
  }

  /** Names of the directories in `dir` that are templates or builds (not half-made `.new-…` ones). */
  private async dirNames(dir: string): Promise<string[]> {
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    return entries.filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => e.name);
  }
}

/** `20261203T071200-…` → `2026-12-03T07:12:00Z`. */
function builtAtOf(buildId: string): string {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})/.exec(buildId);
  return m ? `${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}Z` : '';
}
