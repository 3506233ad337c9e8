// `clarateach image build`: builds a template's guest image (default: the default template, into
// IMAGES_DIR itself, the guide's paths), showing progress, and publishes it as a new build.
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildImage } from '../image/index.ts';
import { TemplateCatalog } from '../templates/catalog.ts';
import { DEFAULT_TEMPLATE, TEMPLATE_NAME_PATTERN } from '../vms/model.ts';
import { UsageError } from './operator/output.ts';

export interface ImageBuildOptions {
  readonly template?: string;
  readonly imagesDir?: string;
  readonly recipe?: string;
  readonly force?: boolean;
}

/** A named template's recipe: images/<name>/recipe.json of this repository. */
function recipeOf(template: string): string {
  return fileURLToPath(new URL(`../../images/${template}/recipe.json`, import.meta.url));
}

export async function imageBuild(o: ImageBuildOptions): Promise<void> {
  const template = o.template ?? DEFAULT_TEMPLATE;
  if (!new RegExp(TEMPLATE_NAME_PATTERN).test(template))
    throw new UsageError(`--template must match ${TEMPLATE_NAME_PATTERN}, got "${template}"`);
  const imagesDir = o.imagesDir || process.env['IMAGES_DIR'] || '/var/lib/clarateach/images';
  const recipePath = o.recipe || process.env['IMAGE_RECIPE'] || undefined;
  const catalog = new TemplateCatalog(imagesDir);
  const named = template !== DEFAULT_TEMPLATE;
  const started = Date.now();
  const manifest = await buildImage({
    imagesDir: catalog.workDir(template),
    recipePath: named ? (recipePath ?? recipeOf(template)) : recipePath,
    force: o.force === true,
    onProgress: (message) => process.stdout.write(`[image] ${message}\n`),
    ...(named ? { cacheDir: join(imagesDir, '.cache') } : {}),
  });
  // Published now, so that the build a VM is made from is the one this command reported.
  const build = await catalog.current(template);
  process.stdout.write(`[image] done in ${((Date.now() - started) / 1000).toFixed(1)} s: ${JSON.stringify(manifest)}\n`);
  process.stdout.write(`[image] template ${template}: build ${build.buildId}\n`);
}
