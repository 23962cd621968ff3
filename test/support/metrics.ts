import type { Metrics } from '../../src/metrics.js';

type Labels = Readonly<Record<string, string>>;

interface Readable {
  get(): Promise<{
    values: readonly { value: number; labels: Readonly<Record<string, string | number | undefined>>; metricName?: string }[];
  }>;
}

/**
 * The sum of a metric's samples whose labels include `labels` (a counter or gauge; for a
 * histogram pass `metricName` = `<name>_count`). 0 when no sample matches.
 */
export async function metricValue(metric: Readable, labels: Labels = {}, metricName?: string): Promise<number> {
  const { values } = await metric.get();
  return values
    .filter((v) => metricName === undefined || v.metricName === metricName)
    .filter((v) => Object.entries(labels).every(([name, value]) => String(v.labels[name]) === value))
    .reduce((sum, v) => sum + v.value, 0);
}

/** Upstream round trips recorded for `upstream`, by status class (`error` for no response). */
export function upstreamRoundTrips(metrics: Metrics, labels: Labels): Promise<number> {
  return metricValue(metrics.upstreamRequests, labels, 'oci_mirror_upstream_request_duration_seconds_count');
}
