// POST /vms/{workshopID}/{seatID}/token: a short-lived learner token for one seat's proxy paths.
import type { FastifyInstance } from 'fastify';
import { ApiError } from '../../http/errors.ts';
import type { Authenticator } from '../auth.ts';
import { seatFromParam, vmParamsSchema, type VmParams } from '../../http/seat.ts';
import type { VmManager } from '../../vms/manager.ts';

export interface TokenRoutesOptions {
  readonly auth: Authenticator;
  readonly manager: VmManager;
  readonly maxSeat: number;
  readonly defaultTtlS: number;
}

const MAX_TTL_S = 24 * 3600;

/** The learner page of a seat, opened with `token`: the link to hand to the learner. */
export function workspaceUrl(origin: string, workshopId: string, seatId: number, token: string): string {
  return `${origin}/workspace/${encodeURIComponent(workshopId)}/${seatId}/?token=${encodeURIComponent(token)}`;
}

export async function tokenRoutes(app: FastifyInstance, o: TokenRoutesOptions): Promise<void> {
  app.post<{ Params: VmParams; Body: { ttl_s?: number } | undefined }>(
    '/vms/:workshopID/:seatID/token',
    {
      schema: {
        params: vmParamsSchema(),
        body: {
          type: ['object', 'null'],
          additionalProperties: false,
          properties: { ttl_s: { type: 'integer', minimum: 30, maximum: MAX_TTL_S } },
        },
      },
    },
    async (request, reply) => {
      if (!o.auth.learnerTokensEnabled) {
        throw new ApiError(503, 'tokens_not_configured', 'set WORKSPACE_TOKEN_SECRET to issue learner tokens');
      }
      const seat = seatFromParam(request.params.seatID, o.maxSeat);
      const vm = o.manager.get(request.params.workshopID, seat);
      const ttl = request.body?.ttl_s ?? o.defaultTtlS;
      const issued = await o.auth.issue(vm.workshopId, vm.seatId, vm.createdAt, ttl);
      return reply.code(201).send({
        token: issued.token,
        token_id: issued.tokenId,
        workshop_id: vm.workshopId,
        seat_id: vm.seatId,
        expires_at: issued.expiresAt.toISOString(),
        proxy_base: `/proxy/${vm.workshopId}/${vm.seatId}/`,
        workspace_url: workspaceUrl(`${request.protocol}://${request.host}`, vm.workshopId, vm.seatId, issued.token),
      });
    },
  );
}
