// /proxy/{workshopID}/{seatID}/...: guest health, and the file server's HTTP API streamed both ways.
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { IncomingHttpHeaders } from 'node:http';
import replyFrom from '@fastify/reply-from';
import { pipeline } from 'node:stream';
import { ApiError, sendError } from '../http/errors.ts';
import { seatFromParam, vmParamsSchema, type VmParams } from '../http/seat.ts';
import type { GuestProbe } from '../vms/ports.ts';
import { joinable, relayDownload, type SocketJoiner } from './downloads.ts';
import { FILES_PORT } from './guest.ts';
import type { SeatLookup } from './seats.ts';
import { countingStream, untracked, type ProxyTraffic } from './traffic.ts';

export interface ProxyRoutesOptions {
  readonly seats: SeatLookup;
  readonly maxSeat: number;
  readonly probe: GuestProbe;
  readonly traffic?: ProxyTraffic;
  /** When given, GETs go through relayDownload: large bodies are relayed in the kernel. */
  readonly joiner?: SocketJoiner;
}

/**
 * True when a files path, decoded up to three times (double-encoding tricks), has a `..` segment
 * or a NUL. The guest's file server confines paths too; the agent refuses them before they travel.
 */
export function escapesWorkspace(rawPath: string): boolean {
  let path = rawPath;
  for (let i = 0; i < 3; i++) {
    let decoded: string;
    try {
      decoded = decodeURIComponent(path);
    } catch {
      return true;
    }
    if (decoded === path) break;
    path = decoded;
  }
  return path.includes('\0') || path.split(/[\\/]/).some((segment) => segment === '..');
}

const FILE_METHODS = ['GET', 'HEAD', 'PUT', 'POST', 'DELETE', 'PATCH'] as const;

const FILES_DESCRIPTION =
  "The seat's file server, streamed both ways (the guest's own API). Bodies are never buffered by the agent; of the guest's answer only a file server's headers pass, sandboxed. A GET answered with 1 MiB or more is relayed in the kernel where the agent can; the connection stays open for the next request.";

export async function proxyRoutes(app: FastifyInstance, o: ProxyRoutesOptions): Promise<void> {
  const params = vmParamsSchema();
  const traffic = o.traffic ?? untracked;

  app.get<{ Params: VmParams }>('/proxy/:workshopID/:seatID/health', { schema: { params } }, async (request) => {
    const seat = seatFromParam(request.params.seatID, o.maxSeat);
    const vm = o.seats.get(request.params.workshopID, seat);
    const health = vm.status === 'running' ? await o.probe(vm.ip) : { terminal: false, files: false };
    return {
      workshop_id: vm.workshopId,
      seat_id: vm.seatId,
      vm_ip: vm.ip,
      // `stopped`: stopped on request (idle) and not coming back by itself, unlike an unhealthy one.
      status: vm.status === 'stopped' ? 'stopped' : health.terminal && health.files ? 'healthy' : 'unhealthy',
      terminal: health.terminal,
      files: health.files,
    };
  });

  await app.register(async (files) => {
    // Bodies pass through as streams: an upload never sits in the agent's memory.
    files.removeAllContentTypeParsers();
    // Counted on the way through, chunk by chunk; an aborted upload destroys the counter too.
    files.addContentTypeParser('*', (_request, payload, done) => {
      const counted = countingStream((bytes) => traffic.transferred('files', 'to_guest', bytes));
      done(
        null,
        pipeline(payload, counted, () => undefined),
      );
    });
    await files.register(replyFrom, {
      undici: { connections: 16, pipelining: 1, connect: { timeout: 5_000 }, headersTimeout: 30_000, bodyTimeout: 0 },
    });

    const handler = filesHandler(o, traffic);
    const schema = { params, description: FILES_DESCRIPTION };
    // The wildcard is a path parameter too (`{*}` in the OpenAPI document), so it is declared.
    const wildcard = { type: 'string', description: 'the path inside the workspace, as the client encoded it' } as const;
    const wildcardParams = { ...params, properties: { ...params.properties, '*': wildcard } };
    files.route({ method: [...FILE_METHODS], url: '/proxy/:workshopID/:seatID/files', schema, handler });
    files.route({
      method: [...FILE_METHODS],
      url: '/proxy/:workshopID/:seatID/files/*',
      schema: { ...schema, params: wildcardParams },
      handler,
    });
  });
}

/** What a file server's answer may say to the browser (src/guest/files/server.ts sends no other). */
const GUEST_ANSWER_HEADERS = new Set([
  'content-type',
  'content-length',
  'content-range',
  'accept-ranges',
  'etag',
  'last-modified',
  'cache-control',
  'content-disposition',
  'allow',
]);

/**
 * The guest's answer headers as the client gets them. A guest is the learner's, who can replace
 * its file server: what it answers must not act in the agent's origin (or the workshop server's,
 * which passes it on), where an instructor may open the learner's files. So only the headers of a
 * file server's answer pass (no `Location` to send the instructor elsewhere, no cookie, no
 * `Clear-Site-Data`); every answer is a sandboxed document (`sandbox` added to the guest's own
 * policies: CSPs add up) and never sniffed into another type.
 */
export function guestResponseHeaders(headers: IncomingHttpHeaders): IncomingHttpHeaders {
  const kept: IncomingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) if (GUEST_ANSWER_HEADERS.has(name)) kept[name] = value;
  const policies = headers['content-security-policy'];
  const guestPolicies = policies === undefined ? [] : Array.isArray(policies) ? policies : [policies];
  return { ...kept, 'content-security-policy': [...guestPolicies, 'sandbox'], 'x-content-type-options': 'nosniff' };
}

/** Streams one files request to the seat's guest file server, path as the client encoded it. */
function filesHandler(o: ProxyRoutesOptions, traffic: ProxyTraffic) {
  return async (request: FastifyRequest<{ Params: VmParams & { '*': string } }>, reply: FastifyReply) => {
    const seat = seatFromParam(request.params.seatID, o.maxSeat);
    const vm = o.seats.get(request.params.workshopID, seat);
    const rawUrl = request.raw.url ?? '';
    const queryAt = rawUrl.indexOf('?');
    const rawPath = queryAt >= 0 ? rawUrl.slice(0, queryAt) : rawUrl;
    // Forward the path exactly as the client encoded it: the guest decides what it means.
    const rest = rawPath.slice(rawPath.indexOf('/files', `/proxy/${request.params.workshopID}/`.length) + '/files'.length);
    if (escapesWorkspace(rest)) throw new ApiError(403, 'forbidden_path', 'the path leaves the workspace');
    const target = `http://${vm.ip}:${FILES_PORT}/files${rest}`;
    const query = new URLSearchParams(queryAt >= 0 ? rawUrl.slice(queryAt + 1) : '');
    query.delete('token'); // a learner token is for the agent, never for the guest
    traffic.connected('files'); // counted once it is really proxied: not the refusals above
    if (o.joiner && joinable(request)) {
      const search = query.toString();
      const path = `/files${rest}${search === '' ? '' : `?${search}`}`;
      const download = { host: vm.ip, port: FILES_PORT, path, vm: `${vm.workshopId}.${vm.seatId}` };
      return relayDownload(request, reply, download, o.joiner, traffic, guestResponseHeaders);
    }
    return reply.from(target, {
      queryString: () => query.toString(),
      onResponse: (_request, replyToSend, response) => {
        const counted = countingStream((bytes) => traffic.transferred('files', 'from_guest', bytes));
        replyToSend.send(pipeline(response.stream, counted, () => undefined));
      },
      rewriteHeaders: guestResponseHeaders,
      // The agent's token is not the guest's. `Expect: 100-continue` (curl sends it for bodies
      // over 1 MiB) was answered by the agent already; undici refuses to send it on.
      rewriteRequestHeaders: (_req, headers) => {
        const { authorization: _authorization, expect: _expect, ...rest } = headers;
        return rest;
      },
      onError: (replyToSend, { error }) => {
        request.log.warn({ err: error, vm: `${vm.workshopId}.${vm.seatId}` }, 'file server unreachable');
        const reason = error instanceof Error ? error.message : String(error);
        sendError(
          replyToSend,
          new ApiError(502, 'guest_unreachable', `the seat's file server at ${vm.ip}:${FILES_PORT} did not answer (${reason})`),
        );
      },
    });
  };
}
