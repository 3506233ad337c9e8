// The learner page (src/learner-page) built into static files that the agent serves. `base: './'`
// makes every URL in it relative, so it works under any path prefix.
import { defineConfig } from 'vite';

export default defineConfig({
  root: 'src/learner-page',
  base: './',
  logLevel: 'warn',
  build: { outDir: '../../dist/learner-page', emptyOutDir: true, sourcemap: true, chunkSizeWarningLimit: 2048 },
});
