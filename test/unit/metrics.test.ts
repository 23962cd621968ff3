import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/index.js';
import { createSilentLogger } from '../../src/log.js';
import { createRuntime, type Runtime } from '../../src/runtime.js';
import { aggregateSnapshots, createMetrics, snapshotMetrics } from '../../src/metrics.js';

/** What a scrape of a mirror that has served nothing yet says. */
describe('/metrics at start-up', () => {
  let runtime: Runtime;
  let storeDir: string;
  let text: string;

  beforeAll(async () => {
    storeDir = await mkdtemp(join(tmpdir(), 'oci-mirror-metrics-'));
    const config = parseConfig(
      {
        listen: { host: '127.0.0.1', port: 0 },
        store: { path: storeDir, maxSize: '2GiB' },
        log: { level: 'silent' },
        // Never dials out: a miss is answered from the store alone.
        offline: true,
        defaultUpstream: 'docker.io',
        upstreams: { 'docker.io': { url: 'https://registry-1.docker.io', library: true }, 'ghcr.io': { url: 'https://ghcr.io' } },
      },
      {},
    );
    runtime = await createRuntime(config, { log: createSilentLogger(), processMetrics: false });
    text = (await runtime.app.inject({ method: 'GET', url: '/metrics' })).body;
  });

  afterAll(async () => {
    await runtime?.close();
    await rm(storeDir, { recursive: true, force: true });
  });

  it.each([
    'oci_mirror_requests_total{kind="blob",outcome="miss"} 0',
    'oci_mirror_requests_total{kind="referrers",outcome="error"} 0',
    'oci_mirror_request_duration_seconds_count{kind="manifest",outcome="hit",status_class="2xx"} 0',
    'oci_mirror_request_duration_seconds_count{kind="tags",outcome="error",status_class="5xx"} 0',
    'oci_mirror_verify_failures_total{kind="blob"} 0',
    'oci_mirror_verify_failures_total{kind="manifest"} 0',
    'oci_mirror_fills_total{result="relayed"} 0',
    'oci_mirror_evictions_total{reason="size"} 0',
    'oci_mirror_offline_misses_total{kind="manifest"} 0',
    'oci_mirror_auth_failures_total{reason="unknown_user"} 0',
    'oci_mirror_auth_failures_total{reason="throttled"} 0',
    'oci_mirror_served_bytes_total{source="cache"} 0',
    'oci_mirror_upstream_down{upstream="ghcr.io"} 0',
    'oci_mirror_stale_served_total{upstream="docker.io"} 0',
    'oci_mirror_upstream_fetched_bytes_total{upstream="ghcr.io"} 0',
    'oci_mirror_upstream_request_duration_seconds_count{upstream="docker.io",method="GET",status_class="5xx"} 0',
    'oci_mirror_cache_write_failures_total 0',
    'oci_mirror_store_max_bytes 2147483648',
    'oci_mirror_ready 1',
    'oci_mirror_degraded 0',
  ])('has %s before any request', (sample) => {
    expect(text.split('\n')).toContain(sample);
  });

  it('names the build', () => {
    expect(text).toMatch(/^oci_mirror_build_info\{version="\d+\.\d+\.\d+[^"]*",node="v\d+\.\d+\.\d+"\} 1$/m);
  });

  it('records a registry request where its response ends, and nothing for the ops endpoints', async () => {
    await runtime.app.inject({ method: 'GET', url: `/v2/library/x/blobs/sha256:${'0'.repeat(64)}` });
    await runtime.app.inject({ method: 'GET', url: '/healthz' });
    const after = (await runtime.app.inject({ method: 'GET', url: '/metrics' })).body;
    const counts = after.split('\n').filter((l) => l.startsWith('oci_mirror_request_duration_seconds_count') && !l.endsWith(' 0'));
    expect(counts).toEqual(['oci_mirror_request_duration_seconds_count{kind="blob",outcome="error",status_class="4xx"} 1']);
  });

  it('shows a degraded store', async () => {
    const metrics = createMetrics({ processMetrics: false });
    metrics.watchReadiness(() => ({ ready: true, degraded: true }));
    const scraped = await metrics.exposition();
    expect(scraped).toMatch(/^oci_mirror_degraded 1$/m);
    expect(scraped).toMatch(/^oci_mirror_ready 1$/m);
  });
});

describe('aggregating workers', () => {
  it('sums counters and in-flight gauges, and takes the max of the shared store gauges', async () => {
    const workers = [0, 1, 2].map(() => createMetrics({ processMetrics: false, upstreams: ['docker.io'], storeMaxBytes: 100 }));
    workers.forEach((m, i) => {
      m.requests.inc({ kind: 'blob', outcome: 'hit' }, i + 1);
      m.fillsInFlight.set(1);
      m.storeBytes.set(40 + i);
      m.watchReadiness(() => ({ ready: i !== 2, degraded: i === 1 }));
    });
    const text = await aggregateSnapshots(await Promise.all(workers.map(snapshotMetrics)));
    const lines = text.split('\n');
    expect(lines).toContain('oci_mirror_requests_total{kind="blob",outcome="hit"} 6');
    expect(lines).toContain('oci_mirror_requests_total{kind="blob",outcome="miss"} 0');
    expect(lines).toContain('oci_mirror_fills_in_flight 3');
    expect(lines).toContain('oci_mirror_store_bytes 42');
    expect(lines).toContain('oci_mirror_store_max_bytes 100');
    expect(lines).toContain('oci_mirror_ready 0');
    expect(lines).toContain('oci_mirror_degraded 1');
    expect(lines.filter((l) => l.startsWith('oci_mirror_build_info{'))).toHaveLength(1);
  });
});
