// GET /metrics: the agent's metrics in Prometheus' text format.
import type { FastifyInstance } from 'fastify';

/** What a scrape reads: a prom-client Registry is one. */
export interface MetricsSource {
  readonly contentType: string;
  metrics(): Promise<string>;
}

export async function metricsRoutes(app: FastifyInstance, o: { readonly source: MetricsSource }): Promise<void> {
  app.get(
    '/metrics',
    { schema: { description: 'Prometheus metrics (text exposition format), prefix `clarateach_`' } },
    async (_request, reply) => reply.type(o.source.contentType).send(await o.source.metrics()),
  );
}
