// `clarateach image build`: builds the guest image into IMAGES_DIR, showing progress.
import { buildImage } from '../image/index.ts';

const IMAGE_USAGE = `usage: clarateach image build [--images-dir DIR] [--recipe FILE] [--force]

  --images-dir DIR  where vmlinux, initrd.img and rootfs.ext4 go (env IMAGES_DIR, default /var/lib/clarateach/images)
  --recipe FILE     packages and extra files of the guest (env IMAGE_RECIPE, default images/recipe.json)
  --force           rebuild every stage even when its inputs did not change
`;

export async function imageCommand(args: readonly string[]): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'build') {
    process.stderr.write(IMAGE_USAGE);
    return sub === '--help' || sub === '-h' ? 0 : 2;
  }
  let imagesDir = process.env['IMAGES_DIR'] || '/var/lib/clarateach/images';
  let recipePath = process.env['IMAGE_RECIPE'] || undefined;
  let force = false;
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i];
    if (arg === '--force') force = true;
    else if (arg === '--images-dir' && rest[i + 1]) imagesDir = rest[++i] ?? imagesDir;
    else if (arg === '--recipe' && rest[i + 1]) recipePath = rest[++i];
    else {
      process.stderr.write(`clarateach image build: unexpected argument "${arg}"\n\n${IMAGE_USAGE}`);
      return 2;
    }
  }
  const started = Date.now();
  const manifest = await buildImage({
    imagesDir,
    recipePath,
    force,
    onProgress: (message) => process.stdout.write(`[image] ${message}\n`),
  });
  process.stdout.write(`[image] done in ${((Date.now() - started) / 1000).toFixed(1)} s: ${JSON.stringify(manifest)}\n`);
  return 0;
}
