// One image set per checkout for tests and benchmarks, built once and reused: every suite that
// boots a guest calls ensureSharedImages() (concurrent callers wait for each other's build).
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildImage, imagePaths, type ImageManifest } from './index.ts';

/** $CLARATEACH_TEST_IMAGES (set by scripts/run-tests.js), else `<repo>/.cache/images` (git-ignored). */
export function sharedImagesDir(): string {
  const fromEnv = process.env.CLARATEACH_TEST_IMAGES;
  if (fromEnv) return resolve(fromEnv);
  return resolve(dirname(fileURLToPath(import.meta.url)), '../../.cache/images');
}

export interface SharedImages {
  readonly dir: string;
  readonly kernelPath: string;
  readonly initrdPath: string;
  readonly rootfsPath: string;
  readonly manifest: ImageManifest;
}

/** Builds (first time: about a minute, with network) or checks (seconds) the shared image set. */
export async function ensureSharedImages(onProgress?: (msg: string) => void): Promise<SharedImages> {
  const dir = sharedImagesDir();
  const manifest = await buildImage({ imagesDir: dir, ...(onProgress ? { onProgress } : {}) });
  const paths = imagePaths(dir);
  return { dir, kernelPath: paths.kernel, initrdPath: paths.initrd, rootfsPath: paths.rootfs, manifest };
}
