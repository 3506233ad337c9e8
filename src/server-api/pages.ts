// The server's own pages, static files built by Vite (src/server-pages): the instructor's
// dashboard at / and the learners' join page at /join. They hold no data: every call they make
// goes to /api with the visitor's cookie.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance, FastifyReply } from 'fastify';
import fastifyStatic from '@fastify/static';
import { ApiError } from '../http/errors.ts';

export interface PageRoutesOptions {
  /** The Vite build of the pages (index.html, join.html, assets/). */
  readonly pagesDir: string;
}

/** Same origin only; no other site may frame the dashboard (clickjacking of its buttons). */
const PAGE_HEADERS = {
  'Content-Security-Policy':
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
  'Referrer-Policy': 'no-referrer',
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
};

export async function pageRoutes(app: FastifyInstance, o: PageRoutesOptions): Promise<void> {
  await app.register(fastifyStatic, { root: o.pagesDir, serve: false });
  const page = (file: string) => async (_request: unknown, reply: FastifyReply) => {
    if (!existsSync(join(o.pagesDir, file)))
      throw new ApiError(503, 'page_not_built', `the server's pages are not built (no ${join(o.pagesDir, file)}): run npm run build`);
    return send(reply, file, 'no-cache');
  };
  // Pages, not API: left out of the OpenAPI document.
  const hidden = (description: string) => ({ schema: { security: [], hide: true, description } });
  app.get('/', hidden("The instructor's dashboard"), page('index.html'));
  app.get('/join', hidden("The learners' join page"), page('join.html'));
  app.get<{ Params: { '*': string } }>('/assets/*', hidden("The pages' scripts and styles"), async (request, reply) => {
    if (!existsSync(join(o.pagesDir, 'assets'))) throw new ApiError(404, 'not_found', 'no such asset');
    // Vite names assets by content hash: a name never changes meaning.
    return send(reply, join('assets', request.params['*']), 'public, max-age=31536000, immutable');
  });
}

function send(reply: FastifyReply, file: string, cacheControl: string): FastifyReply {
  return reply.headers({ ...PAGE_HEADERS, 'Cache-Control': cacheControl }).sendFile(file, { cacheControl: false });
}
