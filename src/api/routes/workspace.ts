// GET /workspace/{workshopID}/{seatID}/: the learner's page (terminal tabs, files, editor), static
// files built by Vite (src/learner-page). The page holds no data: every call it makes goes to
// /proxy/{ws}/{seat}/ with the token from its own URL, so it is served without authentication.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyInstance, FastifyReply } from 'fastify';
import fastifyStatic from '@fastify/static';
import { ApiError } from '../../http/errors.ts';
import { vmParamsSchema, type VmParams } from '../../http/seat.ts';

export interface WorkspaceRoutesOptions {
  /** The Vite build of the page (index.html, assets/). */
  readonly pageDir: string;
}

/** The page's own origin only ('self' covers its ws:/wss: too); CodeMirror injects its styles inline; the token in the URL never leaves as a Referer. */
const PAGE_HEADERS = {
  'Content-Security-Policy':
    "default-src 'self'; connect-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'self'; base-uri 'none'",
  'Referrer-Policy': 'no-referrer',
  'X-Content-Type-Options': 'nosniff',
};

export async function workspaceRoutes(app: FastifyInstance, o: WorkspaceRoutesOptions): Promise<void> {
  await app.register(fastifyStatic, { root: o.pageDir, serve: false });
  const params = vmParamsSchema();
  // The wildcard is a path parameter too (`{*}` in the OpenAPI document), so it is declared.
  const assetParams = { ...params, properties: { ...params.properties, '*': { type: 'string', description: 'the asset file' } } } as const;
  const notBuilt = (): ApiError =>
    new ApiError(503, 'page_not_built', `the learner page is not built (no ${join(o.pageDir, 'index.html')}): run npm run build`);

  app.get<{ Params: VmParams }>('/workspace/:workshopID/:seatID', { schema: { params, security: [] } }, async (request, reply) => {
    const [path = '', query] = (request.raw.url ?? '').split(/\?(.*)/s);
    // The page's URLs are relative to its folder: without the trailing slash they would miss it.
    if (!path.endsWith('/')) {
      const seatSegment = path.slice(path.lastIndexOf('/') + 1);
      return reply.redirect(`${seatSegment}/${query ? `?${query}` : ''}`, 308);
    }
    if (!existsSync(join(o.pageDir, 'index.html'))) throw notBuilt();
    return sendPageFile(reply, 'index.html', 'no-cache');
  });

  app.get<{ Params: VmParams & { '*': string } }>(
    '/workspace/:workshopID/:seatID/assets/*',
    { schema: { params: assetParams, security: [] } },
    async (request, reply) => {
      if (!existsSync(join(o.pageDir, 'assets'))) throw notBuilt();
      // Vite names assets by content hash: a name never changes meaning.
      return sendPageFile(reply, join('assets', request.params['*']), 'public, max-age=31536000, immutable');
    },
  );
}

function sendPageFile(reply: FastifyReply, file: string, cacheControl: string): FastifyReply {
  return reply.headers({ ...PAGE_HEADERS, 'Cache-Control': cacheControl }).sendFile(file, { cacheControl: false });
}
