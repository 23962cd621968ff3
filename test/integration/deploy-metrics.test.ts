import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parser } from '@prometheus-io/lezer-promql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { startMirrorProcess, type MirrorProcess } from '../support/mirror.js';
import { freePort } from '../support/ports.js';

/**
 * Every metric the Grafana dashboards and the alert rules query is one a real mirror
 * exports: the built mirror (`dist/main.js serve`, as users run it) is scraped, and each
 * expression is parsed with Prometheus' own PromQL grammar to find its metric names. A
 * renamed metric would otherwise leave an empty panel and an alert that never fires.
 * Run `npm run build` first.
 */
const DEPLOY = join(import.meta.dirname, '../../deploy');

/** Series the mirror does not export, and who does. */
const FOREIGN: Record<string, string> = {
  up: 'Prometheus, per scrape target',
  kubelet_volume_stats_available_bytes: 'the kubelet',
  kubelet_volume_stats_capacity_bytes: 'the kubelet',
};

/** Grafana's interval variables are durations; other variables sit inside label values. */
const grafanaToPromql = (expr: string): string =>
  expr.replaceAll('$__rate_interval', '5m').replaceAll('$__interval', '1m').replaceAll('$__range', '1h');

interface Selector {
  readonly name?: string;
  readonly nameRegex?: string;
}

/** The metric selectors of one PromQL expression; throws on a syntax error. */
function selectors(expr: string): Selector[] {
  const tree = parser.parse(expr);
  const found: Selector[] = [];
  let error: number | undefined;
  tree.iterate({
    enter(node) {
      if (node.type.isError) error ??= node.from;
      if (node.name === 'VectorSelector') {
        const name = node.node.getChild('Identifier');
        if (name) found.push({ name: expr.slice(name.from, name.to) });
      }
      if (node.name === 'UnquotedLabelMatcher' && expr.slice(node.from, node.to).startsWith('__name__')) {
        const op = node.node.getChild('MatchOp');
        const value = node.node.getChild('StringLiteral');
        const text = value ? (JSON.parse(expr.slice(value.from, value.to)) as string) : '';
        found.push(op && expr.slice(op.from, op.to) === '=~' ? { nameRegex: text } : { name: text });
      }
    },
  });
  if (error !== undefined) throw new Error(`PromQL syntax error at ${error}: ${expr}`);
  return found;
}

/** Every `expr` in a Grafana dashboard, and the metric behind each `label_values(metric, label)` variable. */
function dashboardExpressions(value: unknown, found: string[] = []): string[] {
  if (Array.isArray(value)) for (const item of value) dashboardExpressions(item, found);
  else if (value !== null && typeof value === 'object') {
    for (const [key, child] of Object.entries(value)) {
      if (key === 'expr' && typeof child === 'string') found.push(grafanaToPromql(child));
      else if (key === 'definition' && typeof child === 'string') found.push(/^label_values\((.+),\s*\w+\)$/.exec(child)?.[1] ?? child);
      else dashboardExpressions(child, found);
    }
  }
  return found;
}

/** Metric family names with their TYPE, from the text exposition format. */
function families(exposition: string): Map<string, string> {
  return new Map([...exposition.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1] as string, m[2] as string]));
}

/** Whether a series name is exported, directly or as a histogram's or summary's _bucket/_sum/_count. */
function exported(name: string, exposed: ReadonlyMap<string, string>): boolean {
  if (exposed.has(name)) return true;
  const part = /^(.*)_(bucket|sum|count)$/.exec(name);
  const type = part ? exposed.get(part[1] as string) : undefined;
  return type === 'histogram' || (type === 'summary' && part?.[2] !== 'bucket');
}

function missingFrom(exposed: ReadonlyMap<string, string>, used: readonly Selector[]): string[] {
  const names = [...exposed.keys()];
  const missing = used.filter((s) => {
    if (s.name !== undefined) return !(s.name in FOREIGN) && !exported(s.name, exposed);
    const pattern = new RegExp(`^(?:${s.nameRegex ?? ''})$`);
    return !names.some((n) => pattern.test(n));
  });
  return [...new Set(missing.map((s) => s.name ?? `{__name__=~"${s.nameRegex ?? ''}"}`))].sort();
}

describe('deploy/ queries what the mirror exports', () => {
  let mirror: MirrorProcess;
  let exposed: Map<string, string>;
  const expressions: { source: string; expr: string }[] = [];

  beforeAll(async () => {
    mirror = await startMirrorProcess({ upstreams: { 'upstream.test': { url: 'http://127.0.0.1:9' } } }, await freePort());
    const response = await fetch(`${mirror.url}/metrics`);
    expect(response.status).toBe(200);
    exposed = families(await response.text());
    for (const file of (await readdir(join(DEPLOY, 'grafana'))).filter((f) => f.endsWith('.json'))) {
      const dashboard = JSON.parse(await readFile(join(DEPLOY, 'grafana', file), 'utf8')) as unknown;
      for (const expr of dashboardExpressions(dashboard)) expressions.push({ source: `grafana/${file}`, expr });
    }
    const rules = parseYaml(await readFile(join(DEPLOY, 'prometheus/oci-mirror.rules.yaml'), 'utf8')) as {
      groups: { rules: { alert: string; expr: string }[] }[];
    };
    for (const rule of rules.groups.flatMap((g) => g.rules)) expressions.push({ source: rule.alert, expr: rule.expr });
  });

  afterAll(async () => {
    await mirror?.stop();
  });

  it('scrapes a real mirror', () => {
    expect(exposed.get('oci_mirror_requests_total')).toBe('counter');
    expect(exposed.get('oci_mirror_upstream_request_duration_seconds')).toBe('histogram');
  });

  it('finds every metric of every dashboard query and alert among the exported ones', () => {
    const used = expressions.flatMap(({ source, expr }) => selectors(expr).map((s) => ({ ...s, source })));
    expect(expressions.filter((e) => e.source.startsWith('grafana/')).length).toBeGreaterThan(25);
    expect(expressions.filter((e) => !e.source.startsWith('grafana/')).length).toBeGreaterThanOrEqual(9);
    expect(new Set(used.map((s) => s.name ?? s.nameRegex)).size).toBeGreaterThan(15);
    expect(missingFrom(exposed, used)).toEqual([]);
  });

  it('would notice a metric that is not exported (the check binds)', () => {
    const used = [
      ...selectors('sum(rate(oci_mirror_renamed_total[5m])) / sum(rate(oci_mirror_requests_total[5m]))'),
      ...selectors('histogram_quantile(0.9, rate(oci_mirror_requests_total_bucket[5m]))'),
      ...selectors('{__name__=~"nodejs_nothing_.*"}'),
    ];
    expect(missingFrom(exposed, used)).toEqual([
      'oci_mirror_renamed_total',
      'oci_mirror_requests_total_bucket',
      '{__name__=~"nodejs_nothing_.*"}',
    ]);
    expect(() => selectors('sum(rate(oci_mirror_requests_total[5m])')).toThrow(/syntax error/);
  });
});
