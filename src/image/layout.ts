// What an images directory holds, by name: written by the image build, read by the lifecycle and
// the drivers. The one place these names are spelled.
import { join } from 'node:path';

/** File names inside the images directory. */
export const IMAGE_FILES = {
  kernel: 'vmlinux',
  initrd: 'initrd.img',
  rootfs: 'rootfs.ext4',
  manifest: 'manifest.json',
} as const;

/** Absolute paths of the boot images in `imagesDir`. */
export function imagePaths(imagesDir: string): { readonly kernel: string; readonly initrd: string; readonly rootfs: string } {
  return {
    kernel: join(imagesDir, IMAGE_FILES.kernel),
    initrd: join(imagesDir, IMAGE_FILES.initrd),
    rootfs: join(imagesDir, IMAGE_FILES.rootfs),
  };
}

/** A boot file as a finished build's manifest records it: the test a build itself uses for "unchanged". */
export interface RecordedFile {
  readonly bytes: number;
  readonly mtimeMs: number;
}

/**
 * Size and mtime of each boot file from a parsed `manifest.json` (`ImageManifest.files`), or
 * undefined when it records none. The build writes the manifest last, so files unlike it are
 * left by a build that failed, was killed, or is still running.
 */
export function recordedBootFiles(
  manifest: unknown,
): { readonly kernel: RecordedFile; readonly initrd: RecordedFile; readonly rootfs: RecordedFile } | undefined {
  const files = (manifest as { files?: unknown } | null | undefined)?.files;
  if (typeof files !== 'object' || files === null) return undefined;
  const one = (key: 'kernel' | 'initrd' | 'rootfs'): RecordedFile | undefined => {
    const info = (files as Record<string, { bytes?: unknown; mtimeMs?: unknown } | undefined>)[key];
    return typeof info?.bytes === 'number' && typeof info.mtimeMs === 'number' ? { bytes: info.bytes, mtimeMs: info.mtimeMs } : undefined;
  };
  const kernel = one('kernel');
  const initrd = one('initrd');
  const rootfs = one('rootfs');
  return kernel && initrd && rootfs ? { kernel, initrd, rootfs } : undefined;
}
