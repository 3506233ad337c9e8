// The workshop server's own pages (src/server-pages: the instructor's dashboard and the learners'
// join page), built into static files that `clarateach server` serves at / and /join.
import { defineConfig } from 'vite';

export default defineConfig({
  root: 'src/server-pages',
  base: './',
  logLevel: 'warn',
  build: {
    outDir: '../../dist/server-pages',
    emptyOutDir: true,
    sourcemap: true,
    rollupOptions: { input: { index: 'src/server-pages/index.html', join: 'src/server-pages/join.html' } },
  },
});
