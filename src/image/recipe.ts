// The operator-editable image recipe (images/recipe.json): which Debian, which packages, which
// extra files, which kernel. Every problem is reported with the recipe path and the field name.
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface RecipeFile {
  /** Source path, relative to the recipe file (a file or a directory, copied recursively). */
  readonly src: string;
  /** Absolute destination inside the guest root filesystem. */
  readonly dest: string;
  /** Octal permission bits for a file, e.g. "0644"; directories keep theirs. */
  readonly mode?: string;
  /** Owner as "uid:gid"; default 0:0. */
  readonly owner?: string;
}

export interface Recipe {
  /** Absolute path of the recipe file it was read from. */
  readonly path: string;
  readonly suite: string;
  /** apt source lines for mmdebstrap, e.g. "deb http://deb.debian.org/debian bookworm main". */
  readonly sources: readonly string[];
  readonly variant: 'minbase' | 'essential' | 'apt' | 'required' | 'important' | 'standard';
  /** Debian package whose (versioned) kernel the guest boots. */
  readonly kernelPackage: string;
  readonly packages: readonly string[];
  /** dpkg path-exclude globs (documentation, manuals) to keep the base image small. */
  readonly excludePaths: readonly string[];
  /** dpkg path-include globs re-allowing parts of the excluded paths. */
  readonly keepPaths: readonly string[];
  readonly learner: { readonly sudo: boolean; readonly shell: string };
  readonly files: readonly RecipeFile[];
  /** Kernel modules the initramfs loads (with their dependencies); built-in ones are skipped. */
  readonly initrdModules: readonly string[];
  /** Free space added to the base filesystem beyond its content. */
  readonly rootfsMarginMb: number;
}

export class RecipeError extends Error {
  constructor(path: string, field: string, message: string) {
    super(`${path}: ${field}: ${message}`);
    this.name = 'RecipeError';
  }
}

/** images/recipe.json of this repository. */
export function defaultRecipePath(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '../../images/recipe.json');
}

const VARIANTS = ['minbase', 'essential', 'apt', 'required', 'important', 'standard'] as const;
const PACKAGE_NAME = /^[a-z0-9][a-z0-9+.-]+$/;
const MODULE_NAME = /^[A-Za-z0-9_-]+$/;

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function parseRecipe(path: string, text: string): Recipe {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new RecipeError(path, '(file)', `not valid JSON: ${(error as Error).message}`);
  }
  if (!isRecord(raw)) throw new RecipeError(path, '(file)', 'must be a JSON object');
  const doc = raw;
  const known = new Set([
    '$comment',
    'suite',
    'sources',
    'variant',
    'kernelPackage',
    'packages',
    'excludePaths',
    'keepPaths',
    'learner',
    'files',
    'initrdModules',
    'rootfsMarginMb',
  ]);
  for (const key of Object.keys(doc)) {
    if (!known.has(key)) throw new RecipeError(path, key, 'unknown field');
  }

  const str = (field: string, fallback?: string): string => {
    const value = doc[field] ?? fallback;
    if (typeof value !== 'string' || value.trim() === '') throw new RecipeError(path, field, 'must be a non-empty string');
    return value.trim();
  };
  const strings = (field: string, check?: (s: string) => string | undefined, fallback: readonly string[] = []): string[] => {
    const value = doc[field] ?? fallback;
    if (!Array.isArray(value)) throw new RecipeError(path, field, 'must be an array of strings');
    return value.map((item, i) => {
      if (typeof item !== 'string' || item.trim() === '') throw new RecipeError(path, `${field}[${i}]`, 'must be a non-empty string');
      const problem = check?.(item.trim());
      if (problem) throw new RecipeError(path, `${field}[${i}]`, problem);
      return item.trim();
    });
  };

  const variant = str('variant', 'minbase');
  if (!(VARIANTS as readonly string[]).includes(variant)) {
    throw new RecipeError(path, 'variant', `must be one of ${VARIANTS.join(', ')}`);
  }
  const sources = strings('sources', (s) =>
    /^deb(-src)? /.test(s) && !/[\n\r]/.test(s) ? undefined : 'must be a one-line "deb URI SUITE COMPONENTS" entry',
  );
  if (sources.length === 0) throw new RecipeError(path, 'sources', 'needs at least one apt source');
  const packages = strings('packages', (s) => (PACKAGE_NAME.test(s) ? undefined : 'is not a Debian package name'));
  const globCheck = (s: string): string | undefined =>
    s.startsWith('/') && !/[\s'"]/.test(s) ? undefined : 'must be an absolute glob without spaces or quotes';

  const learnerRaw = doc.learner ?? {};
  if (!isRecord(learnerRaw)) throw new RecipeError(path, 'learner', 'must be an object');
  const sudo = learnerRaw.sudo ?? false;
  if (typeof sudo !== 'boolean') throw new RecipeError(path, 'learner.sudo', 'must be true or false');
  const shell = learnerRaw.shell ?? '/bin/bash';
  if (typeof shell !== 'string' || !shell.startsWith('/')) throw new RecipeError(path, 'learner.shell', 'must be an absolute path');

  const filesRaw = doc.files ?? [];
  if (!Array.isArray(filesRaw)) throw new RecipeError(path, 'files', 'must be an array');
  const files: RecipeFile[] = filesRaw.map((entry, i) => {
    const at = `files[${i}]`;
    if (!isRecord(entry)) throw new RecipeError(path, at, 'must be an object with src and dest');
    const { src, dest, mode, owner } = entry;
    if (typeof src !== 'string' || src === '') throw new RecipeError(path, `${at}.src`, 'must be a non-empty path');
    if (typeof dest !== 'string' || !dest.startsWith('/') || dest.split('/').includes('..')) {
      throw new RecipeError(path, `${at}.dest`, 'must be an absolute path without ".."');
    }
    if (mode !== undefined && (typeof mode !== 'string' || !/^0?[0-7]{3,4}$/.test(mode))) {
      throw new RecipeError(path, `${at}.mode`, 'must be an octal string such as "0644"');
    }
    if (owner !== undefined && (typeof owner !== 'string' || !/^\d+:\d+$/.test(owner))) {
      throw new RecipeError(path, `${at}.owner`, 'must be "uid:gid"');
    }
    return { src, dest, ...(mode === undefined ? {} : { mode }), ...(owner === undefined ? {} : { owner }) };
  });

  const margin = doc.rootfsMarginMb ?? 256;
  if (typeof margin !== 'number' || !Number.isInteger(margin) || margin < 16 || margin > 65536) {
    throw new RecipeError(path, 'rootfsMarginMb', 'must be a whole number between 16 and 65536');
  }

  return {
    path,
    suite: str('suite', 'bookworm'),
    sources,
    variant: variant as Recipe['variant'],
    kernelPackage: str('kernelPackage', 'linux-image-cloud-amd64'),
    packages,
    excludePaths: strings('excludePaths', globCheck),
    keepPaths: strings('keepPaths', globCheck),
    learner: { sudo, shell },
    files,
    initrdModules: strings('initrdModules', (s) => (MODULE_NAME.test(s) ? undefined : 'is not a kernel module name'), [
      'virtio_mmio',
      'virtio_blk',
      'virtio_net',
      'overlay',
      'ext4',
    ]),
    rootfsMarginMb: margin,
  };
}

export async function loadRecipe(path: string = defaultRecipePath()): Promise<Recipe> {
  const absolute = isAbsolute(path) ? path : resolve(path);
  let text: string;
  try {
    text = await readFile(absolute, 'utf8');
  } catch (error) {
    throw new RecipeError(absolute, '(file)', `cannot be read (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  return parseRecipe(absolute, text);
}

/** Absolute source path of a recipe file entry. */
export function recipeFileSource(recipe: Recipe, file: RecipeFile): string {
  return resolve(dirname(recipe.path), file.src);
}
