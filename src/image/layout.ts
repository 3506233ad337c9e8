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
