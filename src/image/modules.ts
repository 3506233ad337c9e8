// Kernel module selection for the initramfs: wanted names -> module files in load order, with
// dependencies from modules.dep, built-in modules skipped.
import { basename } from 'node:path';

/** `virtio-net`, `virtio_net.ko.xz` and `kernel/.../virtio_net.ko` all name `virtio_net`. */
export function moduleName(pathOrName: string): string {
  return basename(pathOrName)
    .replace(/\.ko(\.(xz|zst|gz))?$/, '')
    .replace(/-/g, '_');
}

export interface ModuleIndex {
  /** Module name -> path relative to /lib/modules/<release>. */
  readonly paths: ReadonlyMap<string, string>;
  /** Module name -> names of the modules it needs. */
  readonly deps: ReadonlyMap<string, readonly string[]>;
  readonly builtin: ReadonlySet<string>;
}

export function parseModuleIndex(modulesDep: string, modulesBuiltin: string): ModuleIndex {
  const paths = new Map<string, string>();
  const deps = new Map<string, string[]>();
  for (const line of modulesDep.split('\n')) {
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const path = line.slice(0, colon).trim();
    const name = moduleName(path);
    paths.set(name, path);
    deps.set(
      name,
      line
        .slice(colon + 1)
        .trim()
        .split(/\s+/)
        .filter((d) => d !== '')
        .map(moduleName),
    );
  }
  const builtin = new Set(
    modulesBuiltin
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => l !== '')
      .map(moduleName),
  );
  return { paths, deps, builtin };
}

export interface ModuleSelection {
  /** Paths relative to /lib/modules/<release>, each after everything it depends on. */
  readonly loadOrder: readonly string[];
  /** Wanted modules that are built into the kernel (nothing to load). */
  readonly builtin: readonly string[];
}

export function selectModules(index: ModuleIndex, wanted: readonly string[]): ModuleSelection {
  const order: string[] = [];
  const builtin: string[] = [];
  const done = new Set<string>();
  const visiting = new Set<string>();
  const visit = (name: string, chain: readonly string[]): void => {
    if (done.has(name)) return;
    if (visiting.has(name)) throw new Error(`kernel modules: dependency cycle ${[...chain, name].join(' -> ')}`);
    const path = index.paths.get(name);
    if (path === undefined) {
      if (index.builtin.has(name)) {
        done.add(name);
        if (chain.length === 0) builtin.push(name);
        return;
      }
      const via = chain.length > 0 ? ` (needed by ${chain.join(' -> ')})` : '';
      throw new Error(`kernel modules: ${name} is neither a module nor built into this kernel${via}`);
    }
    visiting.add(name);
    for (const dep of index.deps.get(name) ?? []) visit(dep, [...chain, name]);
    visiting.delete(name);
    done.add(name);
    order.push(path);
  };
  for (const name of wanted) visit(moduleName(name), []);
  return { loadOrder: order, builtin };
}
