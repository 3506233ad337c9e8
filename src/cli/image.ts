// `clarateach image build`: builds a template's guest image (default: the default template, into
// IMAGES_DIR itself, the guide's paths), showing progress, and publishes it as a new build.
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildImage } from '../image/index.ts';
import { TemplateCatalog } from '../templates/catalog.ts';
import { DEFAULT_TEMPLATE } from '../vms/model.ts';

/** A named template's recipe: images/<name>/recipe.json of this repository. */
function recipeOf(template: string): string {
  return fileURLToPath(new URL(`../../images/${template}/recipe.json`, import.meta.url));
}

const IMAGE_USAGE = `usage: clarateach image build [--template NAME] [--images-dir DIR] [--recipe FILE] [--force]

  --template NAME   which template (default "default": vmlinux, initrd.img, rootfs.ext4 in IMAGES_DIR;
                    another goes to IMAGES_DIR/templates/NAME, from images/NAME/recipe.json)
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
  let template = DEFAULT_TEMPLATE;
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i];
    if (arg === '--force') force = true;
    else if (arg === '--images-dir' && rest[i + 1]) imagesDir = rest[++i] ?? imagesDir;
    else if (arg === '--recipe' && rest[i + 1]) recipePath = rest[++i];
    else if (arg === '--template' && rest[i + 1]) template = rest[++i] ?? template;
    else {
      process.stderr.write(`clarateach image build: unexpected argument "${arg}"\n\n${IMAGE_USAGE}`);
      return 2;
    }
  }
  const catalog = new TemplateCatalog(imagesDir);
  const named = template !== DEFAULT_TEMPLATE;
  const started = Date.now();
  const manifest = await buildImage({
    imagesDir: catalog.workDir(template),
    recipePath: named ? (recipePath ?? recipeOf(template)) : recipePath,
    force,
    onProgress: (message) => process.stdout.write(`[image] ${message}\n`),
    ...(named ? { cacheDir: join(imagesDir, '.cache') } : {}),
  });
  // Published now, so that the build a VM is made from is the one this command reported.
  const build = await catalog.current(template);
  process.stdout.write(`[image] done in ${((Date.now() - started) / 1000).toFixed(1)} s: ${JSON.stringify(manifest)}\n`);
  process.stdout.write(`[image] template ${template}: build ${build.buildId}\n`);
  return 0;
}
