// The agent's snapshots (the SnapshotPort): one per template build, vCPU count and memory size,
// each in its own directory under STATE_DIR/snapshots. A snapshot is made in the background by
// booting the build once to "services ready" (one at a time: a template boot takes a core for
// seconds); it is published by renaming its finished directory into place, with meta.json written
// last, so a crash never leaves a half-made snapshot that looks usable.
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type {
  DiskPort,
  ImageBuild,
  ImageCatalog,
  ProcessPort,
  SnapshotDriver,
  SnapshotFiles,
  SnapshotInfo,
  SnapshotKey,
  SnapshotLookup,
  SnapshotPort,
  VmLaunchSpec,
} from '../vms/ports.ts';

const META_FORMAT = 1;
const META_NAME = 'meta.json';
/**
 * A snapshot in the making: `.m-<8 hex>/`, its template VMM's sockets in `r/`. Short, because
 * `STATE_DIR/snapshots/.m-<8 hex>/r/identity.sock` is the longest socket path below STATE_DIR
 * (107 bytes at most; src/config/config.ts checks it). `.making-` was the name before.
 */
const MAKING_PREFIX = '.m-';
const RUN_DIR = 'r';
const isMaking = (entry: string): boolean => entry.startsWith(MAKING_PREFIX) || entry.startsWith('.making-');
/** The template's NIC; every restored seat sets its own MAC over the identity channel. */
const TEMPLATE_MAC = '52:54:00:00:00:01';

interface SnapshotMeta {
  readonly format: number;
  readonly template: string;
  readonly buildId: string;
  readonly vcpus: number;
  readonly memoryMb: number;
  readonly compatibility: string;
  readonly createdAt: string;
  readonly makeMs: number;
}

export interface SnapshotStoreOptions {
  /** STATE_DIR/snapshots. */
  readonly dir: string;
  readonly driver: SnapshotDriver;
  readonly disks: DiskPort;
  readonly images: ImageCatalog;
  readonly processes: ProcessPort;
  readonly log: Logger;
  /** Size of the template's writable layer, as for every seat (VM_DISK_MB). */
  readonly layerSizeMb: number;
  /** How long a template boot may take until it is saved (default 180 s: TCG is slow). */
  readonly saveTimeoutMs?: number;
  /** After a failed make, how long until a create may ask again (default 10 min). */
  readonly retryAfterMs?: number;
}

export function snapshotKeyText(key: SnapshotKey): string {
  return `${key.template}/${key.buildId}/${key.vcpus}cpu-${key.memoryMb}mib`;
}

export class SnapshotStore implements SnapshotPort {
  private readonly ready = new Map<string, SnapshotMeta>();
  private readonly making = new Map<string, SnapshotKey>();
  private readonly failed = new Map<string, { readonly at: number; readonly error: string; readonly key: SnapshotKey }>();
  private readonly queued = new Map<string, SnapshotKey>();
  /** One template boot at a time. */
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly o: SnapshotStoreOptions) {}

  private dirOf(key: SnapshotKey): string {
    return join(this.o.dir, key.template, key.buildId, `${key.vcpus}cpu-${key.memoryMb}mib`);
  }

  private filesIn(dir: string): SnapshotFiles {
    return { dir, memoryPath: join(dir, 'memory'), statePath: join(dir, 'state'), layerPath: join(dir, 'layer.img') };
  }

  /**
   * At start-up: ends template VMMs a crash left running, removes unfinished snapshots, and loads
   * the finished ones (those of another VMM version stay on disk until pruned, but are not used).
   */
  async open(): Promise<void> {
    await mkdir(this.o.dir, { recursive: true, mode: 0o755 });
    for (const proc of await this.o.processes.findUnder(this.o.dir)) await this.o.processes.kill(proc);
    for (const entry of await readdir(this.o.dir)) {
      if (isMaking(entry)) await rm(join(this.o.dir, entry), { recursive: true, force: true });
    }
    for (const meta of await this.readAllMeta()) {
      this.ready.set(snapshotKeyText(meta), meta);
      this.prepareCopies(meta);
    }
  }

  /** The seats of a ready snapshot each start on a copy of its layer: copies are made ahead. */
  private prepareCopies(key: SnapshotKey): void {
    const layer = this.filesIn(this.dirOf(key)).layerPath;
    void this.o.disks
      .prepareCopies?.(layer)
      .catch((error: unknown) => this.o.log.warn({ err: error, layer }, 'could not prepare layer copies'));
  }

  private async readAllMeta(): Promise<SnapshotMeta[]> {
    const metas: SnapshotMeta[] = [];
    for (const template of await readdir(this.o.dir).catch(() => [] as string[])) {
      if (template.startsWith('.')) continue;
      for (const build of await readdir(join(this.o.dir, template)).catch(() => [] as string[])) {
        for (const shape of await readdir(join(this.o.dir, template, build)).catch(() => [] as string[])) {
          const meta = await readMeta(join(this.o.dir, template, build, shape));
          if (meta) metas.push(meta);
        }
      }
    }
    return metas;
  }

  async find(key: SnapshotKey): Promise<SnapshotLookup> {
    if (key.buildId === '') return { missing: 'the VM has no recorded build' };
    const text = snapshotKeyText(key);
    const meta = this.ready.get(text);
    if (!meta) {
      const failure = this.failed.get(text);
      if (failure) return { missing: `making its snapshot failed: ${failure.error}` };
      return { missing: this.making.has(text) || this.queued.has(text) ? 'its snapshot is being made' : 'no snapshot yet' };
    }
    const compatibility = await this.o.driver.compatibility();
    if (meta.compatibility !== compatibility) {
      return { missing: `its snapshot is stale (made with "${meta.compatibility}", the VMM is now "${compatibility}")` };
    }
    const files = this.filesIn(this.dirOf(key));
    for (const path of [files.memoryPath, files.statePath, files.layerPath]) {
      // On every create from a snapshot: three stats without the thread pool's round trips.
      if (!existsSync(path)) {
        this.ready.delete(text);
        return { missing: `its snapshot lost ${path}` };
      }
    }
    return { files };
  }

  request(key: SnapshotKey, build: ImageBuild): void {
    if (key.buildId === '') return;
    const text = snapshotKeyText(key);
    if (this.queued.has(text) || this.making.has(text)) return;
    const failure = this.failed.get(text);
    if (failure && Date.now() - failure.at < (this.o.retryAfterMs ?? 600_000)) return;
    this.queued.set(text, key);
    this.queue = this.queue.then(async () => {
      this.queued.delete(text);
      // Stale ones are made again; ready ones are left alone.
      const existing = await this.find(key).catch(() => undefined);
      if (existing && 'files' in existing) return;
      this.making.set(text, key);
      try {
        await this.make(key, build);
        this.failed.delete(text);
      } catch (error) {
        const reason = (error as Error).message;
        this.failed.set(text, { at: Date.now(), error: reason, key });
        this.o.log.error({ snapshot: text, reason }, 'could not make the snapshot; seats of it boot cold');
      } finally {
        this.making.delete(text);
      }
    });
  }

  /** Boots the build to "services ready" in a private directory, saves it, publishes the directory. */
  private async make(key: SnapshotKey, build: ImageBuild): Promise<void> {
    const started = Date.now();
    const text = snapshotKeyText(key);
    const work = join(this.o.dir, `${MAKING_PREFIX}${randomBytes(4).toString('hex')}`);
    const files = this.filesIn(work);
    this.o.log.info({ snapshot: text }, 'making a snapshot (a template boot, in the background)');
    try {
      await mkdir(join(work, RUN_DIR), { recursive: true, mode: 0o750 });
      await this.o.disks.ensureLayer(files.layerPath, this.o.layerSizeMb);
      const spec: VmLaunchSpec = {
        id: `snapshot.${randomBytes(4).toString('hex')}`,
        vcpus: key.vcpus,
        memoryMb: key.memoryMb,
        kernelPath: build.paths.kernel,
        initrdPath: build.paths.initrd,
        kernelArgs: 'clarateach.identity=wait',
        baseDiskPath: build.paths.rootfs,
        layerDiskPath: files.layerPath,
        tapName: '',
        mac: TEMPLATE_MAC,
        runDir: join(work, RUN_DIR),
        consoleLogPath: join(work, 'console.log'),
      };
      await this.o.driver.save(spec, files, this.o.saveTimeoutMs ?? 180_000);
      const meta: SnapshotMeta = {
        format: META_FORMAT,
        ...key,
        compatibility: await this.o.driver.compatibility(),
        createdAt: new Date().toISOString(),
        makeMs: Date.now() - started,
      };
      await rm(join(work, RUN_DIR), { recursive: true, force: true });
      await writeFile(join(work, META_NAME), `${JSON.stringify(meta, null, 2)}\n`);
      const target = this.dirOf(key);
      await mkdir(join(target, '..'), { recursive: true });
      // A stale one of the same key goes; seats restored from it hold their own copies.
      await rm(target, { recursive: true, force: true });
      await rename(work, target);
      this.ready.set(text, meta);
      this.prepareCopies(key);
      const memory = await stat(join(target, 'memory'));
      this.o.log.info(
        { snapshot: text, make_ms: meta.makeMs, memory_mib: Math.round((memory.blocks * 512) / 1048576) },
        'snapshot ready: new seats of it start from it',
      );
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  }

  async prune(keepBuilds: ReadonlySet<string>): Promise<void> {
    for (const [text, meta] of [...this.ready]) {
      if (keepBuilds.has(`${meta.template}/${meta.buildId}`)) continue;
      this.ready.delete(text);
      await rm(join(this.o.dir, meta.template, meta.buildId), { recursive: true, force: true });
      this.o.log.info({ snapshot: text }, 'snapshot of an old build removed');
    }
    for (const [text, failure] of [...this.failed]) {
      if (!keepBuilds.has(`${failure.key.template}/${failure.key.buildId}`)) this.failed.delete(text);
    }
  }

  list(): SnapshotInfo[] {
    const info = (key: SnapshotKey, state: SnapshotInfo['state'], createdAt: string | null, error: string | null): SnapshotInfo => ({
      template: key.template,
      buildId: key.buildId,
      vcpus: key.vcpus,
      memoryMb: key.memoryMb,
      state,
      createdAt,
      error,
    });
    const byKey = new Map<string, SnapshotInfo>();
    for (const [text, failure] of this.failed) byKey.set(text, info(failure.key, 'failed', null, failure.error));
    for (const [text, key] of [...this.queued, ...this.making]) byKey.set(text, info(key, 'making', null, null));
    for (const [text, meta] of this.ready) byKey.set(text, info(meta, 'ready', meta.createdAt, null));
    return [...byKey.values()];
  }

  /** Resolves once every snapshot asked for so far is made (or failed): for shutdown and tests. */
  idle(): Promise<void> {
    return this.queue;
  }
}

async function readMeta(dir: string): Promise<SnapshotMeta | undefined> {
  try {
    const value = JSON.parse(await readFile(join(dir, META_NAME), 'utf8')) as Partial<SnapshotMeta>;
    if (value.format !== META_FORMAT) return undefined;
    const { template, buildId, vcpus, memoryMb, compatibility, createdAt, makeMs } = value;
    if (typeof template !== 'string' || typeof buildId !== 'string' || typeof compatibility !== 'string') return undefined;
    if (typeof vcpus !== 'number' || typeof memoryMb !== 'number' || typeof createdAt !== 'string') return undefined;
    return {
      format: META_FORMAT,
      template,
      buildId,
      vcpus,
      memoryMb,
      compatibility,
      createdAt,
      makeMs: typeof makeMs === 'number' ? makeMs : 0,
    };
  } catch {
    return undefined;
  }
}
