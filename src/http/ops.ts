import type { FastifyInstance } from 'fastify';
import type { Metrics } from '../metrics.js';

export interface Readiness {
  readonly ready: boolean;
  /** Serving, but not everything works (e.g. the store cannot be written). */
  readonly degraded?: string;
}

/** Liveness, readiness and Prometheus metrics, beside the registry API. */
export function registerOps(
  app: FastifyInstance,
  deps: { readonly metrics: Metrics; readonly readiness: () => Readiness },
): void {
  app.get('/healthz', async (request, reply) => {
    request.facts.kind = 'ops';
    return reply.type('application/json').send('{"status":"ok"}');
  });
  app.get('/readyz', async (request, reply) => {
    request.facts.kind = 'ops';
    const state = deps.readiness();
    const body = { status: state.ready ? (state.degraded ? 'degraded' : 'ready') : 'starting', detail: state.degraded };
    return reply.code(state.ready ? 200 : 503).type('application/json').send(JSON.stringify(body));
  });
  app.get('/metrics', async (request, reply) => {
    request.facts.kind = 'ops';
    const text = await deps.metrics.registry.metrics();
    return reply.type(deps.metrics.registry.contentType).send(text);
  });
}
