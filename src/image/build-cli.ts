// Command line for the image build:
//   node --import tsx src/image/build-cli.ts [--images-dir DIR] [--recipe FILE] [--cache-dir DIR] [--force]
// Defaults: --images-dir $IMAGES_DIR or /var/lib/clarateach/images, the repository's recipe.
import { buildImage, type BuildImageOptions } from './index.ts';

export function parseBuildArgs(argv: readonly string[], env: NodeJS.ProcessEnv): BuildImageOptions {
  let imagesDir = env.IMAGES_DIR || '/var/lib/clarateach/images';
  let recipePath: string | undefined;
  let cacheDir: string | undefined;
  let force = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? '';
    const [flag, inline] = arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    const value = (): string => {
      const v = inline ?? argv[++i];
      if (v === undefined || v === '') throw new Error(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--images-dir':
        imagesDir = value();
        break;
      case '--recipe':
        recipePath = value();
        break;
      case '--cache-dir':
        cacheDir = value();
        break;
      case '--force':
        force = true;
        break;
      default:
        throw new Error(`unknown argument ${arg} (usage: [--images-dir DIR] [--recipe FILE] [--cache-dir DIR] [--force])`);
    }
  }
  return { imagesDir, force, ...(recipePath ? { recipePath } : {}), ...(cacheDir ? { cacheDir } : {}) };
}

async function main(): Promise<void> {
  let opts: BuildImageOptions;
  try {
    opts = parseBuildArgs(process.argv.slice(2), process.env);
  } catch (error) {
    console.error(`clarateach image build: ${(error as Error).message}`);
    process.exitCode = 2;
    return;
  }
  const started = Date.now();
  try {
    const manifest = await buildImage({
      ...opts,
      onProgress: (msg) => console.log(`[${((Date.now() - started) / 1000).toFixed(1).padStart(6)} s] ${msg}`),
    });
    console.log(`images in ${opts.imagesDir}: kernel ${manifest.kernel.release}, input hash ${manifest.inputHash.slice(0, 12)}`);
  } catch (error) {
    console.error(`clarateach image build failed: ${(error as Error).message}`);
    process.exitCode = 1;
  }
}

if (process.argv[1] !== undefined && import.meta.url === new URL(`file://${process.argv[1]}`).href) {
  await main();
}
