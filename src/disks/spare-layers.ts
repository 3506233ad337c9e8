// Writable layers made ahead of time. Making a layer runs a program (mkfs.ext4, or cp for a
// snapshot's layer) while the learner waits; with a couple of spares of each kind made in the
// background, a create only renames one into place. A spare is published by a rename once whole,
// so a crash leaves at worst a `.making-` file, removed before the next refill of its kind.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { exists } from '../shared/files.ts';
import type { DiskPort } from '../vms/ports.ts';
import { copyLayerDisk, ensureLayerDisk } from './layer.ts';

const SPARE_SUFFIX = '.ext4';
const MAKING_PREFIX = '.making-';
/** In a copy kind's directory: the source it copies, so that kinds of vanished sources can go. */
const SOURCE_FILE = 'source';
/**
 * A refill after a create took a spare starts this much later: starting its program (mkfs, cp)
 * stops this process for the milliseconds a fork takes, which the create would otherwise wait out.
 */
const REFILL_AFTER_TAKE_MS = 1000;

export interface SpareLayersOptions {
  /** Where spares live: on the filesystem of the VMs' directories (a spare is renamed into place). */
  readonly dir: string;
  /** Spares kept of each kind (an empty layer of a size, a copy of one source). 0: none. */
  readonly perKind: number;
  readonly log?: Logger;
}

function sourceIdentity(source: string, s: { ino: number; mtimeMs: number; size: number }): string {
  return `${source}\0${s.ino}\0${s.mtimeMs}\0${s.size}`;
}

/** The DiskPort, with spares made ahead; a layer is made on the spot when no spare is ready. */
export class SpareLayers implements DiskPort {
  /** One refill at a time per kind (they run in the background). */
  private readonly refills = new Map<string, Promise<void>>();

  constructor(private readonly o: SpareLayersOptions) {}

  async ensureLayer(path: string, sizeMb: number): Promise<void> {
    if (await exists(path)) return;
    if (!(await this.take(`empty-${sizeMb}mib`, path))) await ensureLayerDisk(path, sizeMb);
    this.prefill(sizeMb, REFILL_AFTER_TAKE_MS);
  }

  async copyLayer(source: string, path: string): Promise<void> {
    if (await exists(path)) return;
    const copies = await this.copiesOf(source);
    if (!(await this.take(copies.kind, path))) await copies.make(path);
    copies.refill(REFILL_AFTER_TAKE_MS);
  }

  /** Starts making copies of `source` ahead (a snapshot just made or found): its first seat need not wait. */
  async prepareCopies(source: string): Promise<void> {
    (await this.copiesOf(source)).refill();
  }

  private async copiesOf(
    source: string,
  ): Promise<{ kind: string; make: (target: string) => Promise<void>; refill: (afterMs?: number) => void }> {
    const identity = sourceIdentity(source, await stat(source));
    // A source rewritten in place (same path, a new snapshot) is another kind.
    const kind = `copy-${createHash('sha256').update(identity).digest('hex').slice(0, 16)}`;
    const make = (target: string): Promise<void> => copyLayerDisk(source, target);
    const refill = (afterMs?: number): void =>
      this.refill(
        kind,
        make,
        async () => {
          await writeFile(join(this.o.dir, kind, SOURCE_FILE), JSON.stringify({ source, identity }));
          await this.dropStaleCopies();
        },
        afterMs,
      );
    return { kind, make, refill };
  }

  /** Starts making the spares of an empty layer of `sizeMb` (at the agent's start: the first create need not wait). */
  prefill(sizeMb: number, afterMs?: number): void {
    const kind = `empty-${sizeMb}mib`;
    this.refill(
      kind,
      (target) => ensureLayerDisk(target, sizeMb),
      () => this.dropOthers('empty-', kind),
      afterMs,
    );
  }

  /** Resolves once every refill asked for so far is done: for shutdown and tests. */
  async idle(): Promise<void> {
    while (this.refills.size > 0) await Promise.all(this.refills.values());
  }

  /** Renames a ready spare of `kind` to `path`; false when there is none. */
  private async take(kind: string, path: string): Promise<boolean> {
    for (const name of await this.spares(kind)) {
      try {
        await rename(join(this.o.dir, kind, name), path);
        return true;
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        // Taken by a create running at the same time: try the next one.
        if (code === 'ENOENT') continue;
        // Another filesystem: spares cannot serve here.
        if (code === 'EXDEV') return false;
        throw error;
      }
    }
    return false;
  }

  private async spares(kind: string): Promise<string[]> {
    try {
      return (await readdir(join(this.o.dir, kind))).filter((n) => n.endsWith(SPARE_SUFFIX) && !n.startsWith(MAKING_PREFIX)).sort();
    } catch {
      return [];
    }
  }

  private refill(kind: string, make: (target: string) => Promise<void>, tidy: () => Promise<void>, afterMs = 0): void {
    if (this.o.perKind <= 0 || this.refills.has(kind)) return;
    const dir = join(this.o.dir, kind);
    const work = (async () => {
      if (afterMs > 0) await sleep(afterMs);
      await mkdir(dir, { recursive: true });
      await tidy();
      for (const name of await readdir(dir)) if (name.startsWith(MAKING_PREFIX)) await rm(join(dir, name), { force: true });
      while ((await this.spares(kind)).length < this.o.perKind) {
        const id = randomBytes(6).toString('hex');
        const making = join(dir, `${MAKING_PREFIX}${id}${SPARE_SUFFIX}`);
        await make(making);
        await rename(making, join(dir, `${id}${SPARE_SUFFIX}`));
      }
    })()
      .catch((error: unknown) =>
        this.o.log?.warn({ err: error, kind }, 'spare layers: could not make one (layers are made on each create meanwhile)'),
      )
      .finally(() => this.refills.delete(kind));
    this.refills.set(kind, work);
  }

  /** Spares of another size than the one asked for now (VM_DISK_MB changed) go. */
  private async dropOthers(prefix: string, keep: string): Promise<void> {
    for (const name of await this.kinds()) {
      if (name.startsWith(prefix) && name !== keep && !this.refills.has(name))
        await rm(join(this.o.dir, name), { recursive: true, force: true });
    }
  }

  /** Copies of sources that are gone or were rewritten (a snapshot of an old build, or remade) go. */
  private async dropStaleCopies(): Promise<void> {
    for (const name of await this.kinds()) {
      if (!name.startsWith('copy-') || this.refills.has(name)) continue;
      if (!(await this.sourceUnchanged(join(this.o.dir, name, SOURCE_FILE))))
        await rm(join(this.o.dir, name), { recursive: true, force: true });
    }
  }

  private async sourceUnchanged(recordPath: string): Promise<boolean> {
    try {
      const record = JSON.parse(await readFile(recordPath, 'utf8')) as { source?: unknown; identity?: unknown };
      if (typeof record.source !== 'string') return false;
      return sourceIdentity(record.source, await stat(record.source)) === record.identity;
    } catch {
      return false;
    }
  }

  private async kinds(): Promise<string[]> {
    return readdir(this.o.dir).catch(() => []);
  }
}
