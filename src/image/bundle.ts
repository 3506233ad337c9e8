// The guest workspace services (src/guest/main.ts) bundled into one ESM file for the rootfs, plus
// the node-pty package it loads at run time (a native addon built on the host for the very Node
// binary the guest runs).
import { createHash } from 'node:crypto';
import { cp, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { build } from 'esbuild';
import { exists, hashTree } from './util.ts';

export interface GuestBundle {
  /** The bundled main.mjs. */
  readonly code: string;
  /** The node-pty package directory on the host. */
  readonly nodePtyDir: string;
  /** Hash of the bundle and of the node-pty files that get copied. */
  readonly hash: string;
}

/** node-pty ships prebuilt addons for macOS and Windows; a Linux guest needs none of them. */
export function skipNodePtyPath(rel: string): boolean {
  const parts = rel.split('/');
  return parts[0] === 'prebuilds' && parts.length >= 2 && !(parts[1] ?? '').startsWith('linux-');
}

/** Bundles `entry` (undefined when it does not exist yet). */
export async function bundleGuest(entry: string, repoRoot: string): Promise<GuestBundle | undefined> {
  if (!(await exists(entry))) return undefined;
  const nodePtyDir = join(repoRoot, 'node_modules', 'node-pty');
  if (!(await exists(join(nodePtyDir, 'package.json')))) {
    throw new Error(`${nodePtyDir} is missing: run npm install before building the image`);
  }
  const result = await build({
    entryPoints: [entry],
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    external: ['node-pty'],
    write: false,
    outfile: 'main.mjs',
    logLevel: 'silent',
    legalComments: 'none',
    // CommonJS dependencies call require() for Node built-ins; give the ESM bundle one.
    banner: {
      js: "import { createRequire as __clarateachCreateRequire } from 'node:module';\nconst require = __clarateachCreateRequire(import.meta.url);",
    },
  });
  const out = result.outputFiles.find((f) => f.path.endsWith('main.mjs'));
  if (!out) throw new Error('esbuild produced no main.mjs');
  const ptyHash = await hashTree(nodePtyDir, skipNodePtyPath);
  const hash = createHash('sha256').update(out.text).update(ptyHash).digest('hex');
  return { code: out.text, nodePtyDir, hash };
}

/** Copies node-pty into `<guestDir>/node_modules/node-pty`. */
export async function installNodePty(bundle: GuestBundle, guestDir: string): Promise<void> {
  const target = join(guestDir, 'node_modules', 'node-pty');
  await mkdir(target, { recursive: true });
  await cp(bundle.nodePtyDir, target, {
    recursive: true,
    verbatimSymlinks: true,
    filter: (src) => {
      const rel = src.slice(bundle.nodePtyDir.length + 1);
      return rel === '' || !skipNodePtyPath(rel);
    },
  });
  if (!(await readdir(join(target, 'build', 'Release')).catch(() => [] as string[])).some((f) => f.endsWith('.node'))) {
    throw new Error(`${bundle.nodePtyDir}/build/Release has no .node addon: rebuild node-pty on this host`);
  }
}
