import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from '../log.js';
import { GroupMetricsUnavailable, REQUEST_KINDS, statusClass, type Metrics, type RequestKind } from '../metrics.js';

export interface Readiness {
  readonly ready: boolean;
  /** Serving, but not everything works (e.g. the store cannot be written). */
  readonly degraded?: string;
}

/** Liveness, readiness and Prometheus metrics, beside the registry API. */
export function registerOps(
  app: FastifyInstance,
  deps: { readonly metrics: Metrics; readonly readiness: () => Readiness; readonly log: Logger },
): void {
  deps.metrics.watchReadiness(() => {
    const state = deps.readiness();
    return { ready: state.ready, degraded: state.degraded !== undefined };
  });
  app.get('/healthz', async (request, reply) => {
    request.facts.kind = 'ops';
    return reply.type('application/json').send('{"status":"ok"}');
  });
  app.get('/readyz', async (request, reply) => {
    request.facts.kind = 'ops';
    const state = deps.readiness();
    const body = { status: state.ready ? (state.degraded ? 'degraded' : 'ready') : 'starting', detail: state.degraded };
    return reply
      .code(state.ready ? 200 : 503)
      .type('application/json')
      .send(JSON.stringify(body));
  });
  app.get('/metrics', async (request, reply) => {
    request.facts.kind = 'ops';
    // Under --workers, a worker whose primary does not answer says so rather than
    // answer with its own counters (a scrape of one worker would look like a reset).
    const text = await deps.metrics.exposition().catch((err: unknown) => {
      if (!(err instanceof GroupMetricsUnavailable)) throw err;
      deps.log.warn({ err }, 'metrics not collected');
      return undefined;
    });
    if (text === undefined) return reply.code(503).type('text/plain').send('metrics of the worker group not collected\n');
    return reply.type(deps.metrics.contentType).send(text);
  });
}

/**
 * Records a registry API response in the client-side duration histogram. Called when
 * the response has ended, so a blob's time is to its last byte.
 */
export function recordResponse(metrics: Metrics, request: FastifyRequest, reply: FastifyReply): void {
  const { kind, outcome } = request.facts;
  if (!isRequestKind(kind)) return;
  metrics.requestDuration.observe(
    { kind, outcome: outcome ?? 'error', status_class: statusClass(reply.statusCode) },
    reply.elapsedTime / 1000,
  );
}

function isRequestKind(kind: string | undefined): kind is RequestKind {
  return (REQUEST_KINDS as readonly (string | undefined)[]).includes(kind);
}
