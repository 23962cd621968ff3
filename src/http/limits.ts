/**
 * What clients can make the process hold: at most `listen.maxConnections` connections
 * in all (Node's `server.maxConnections`: one beyond it is closed as soon as it is
 * accepted), and at most `listen.maxRequestsPerClient` requests in flight per client
 * address, the rest answered 429 TOOMANYREQUESTS with `Retry-After` (OCI distribution
 * spec, "Error Codes"). With each transfer's buffer bounded, this bounds memory: a slow
 * reader holds its request, its connection and a few hundred KiB, no more.
 *
 * Behind a reverse proxy every request comes from the proxy's address: with
 * `listen.trustedProxies` the address counted is the one the proxy saw instead.
 *
 * Runs first among the request hooks, so a refused request costs no credential check.
 * A request leaves the count when its response closes: finished, or broken off.
 */
import type { FastifyInstance } from 'fastify';
import type { ListenConfig } from '../config/types.js';
import type { Metrics } from '../metrics.js';
import { RegistryError } from '../oci/errors.js';

export type ClientLimits = Pick<ListenConfig, 'maxConnections' | 'maxRequestsPerClient' | 'trustedProxies'>;

/** Registry clients (containerd, Docker, skopeo) back off and retry a 429. */
const RETRY_AFTER_SECONDS = 1;

export function registerLimits(app: FastifyInstance, limits: ClientLimits, metrics: Metrics): void {
  app.server.maxConnections = limits.maxConnections;
  app.server.on('drop', () => metrics.refused.inc({ limit: 'connections' }));
  const inFlight = new Map<string, number>();
  app.addHook('onRequest', (request, reply, done) => {
    // The client's address, also behind a trusted proxy (listen.trustedProxies; app.ts).
    const address = request.ip;
    const count = inFlight.get(address) ?? 0;
    if (count >= limits.maxRequestsPerClient) {
      metrics.refused.inc({ limit: 'requests_per_client' });
      const message = `more than ${limits.maxRequestsPerClient} requests in flight from this address`;
      done(new RegistryError('TOOMANYREQUESTS', message, { headers: { 'retry-after': String(RETRY_AFTER_SECONDS) } }));
      return;
    }
    inFlight.set(address, count + 1);
    reply.raw.once('close', () => {
      const left = (inFlight.get(address) ?? 1) - 1;
      if (left > 0) inFlight.set(address, left);
      else inFlight.delete(address);
    });
    done();
  });
}
