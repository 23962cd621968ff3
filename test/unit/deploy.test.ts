import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { parse as parseToml } from 'smol-toml';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments, parse as parseYaml } from 'yaml';
import { parseConfig } from '../../src/config/index.js';

/**
 * deploy/ is what users copy, so it is checked like code: every JSON, YAML and TOML
 * file parses and files that must say the same thing do. Beside this file:
 * deploy-alerts (promtool), deploy-kubernetes (kustomize and API schemas),
 * deploy-image (the Dockerfile); test/integration/deploy-metrics checks every metric
 * the dashboard and the alerts query against a real mirror's /metrics.
 */
const DEPLOY = join(import.meta.dirname, '../../deploy');

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((e) => e.isFile())
    .map((e) => relative(DEPLOY, join(e.parentPath, e.name)))
    .sort();
}

const read = (path: string): Promise<string> => readFile(join(DEPLOY, path), 'utf8');
const readYaml = async (path: string): Promise<unknown> => parseYaml(await read(path)) as unknown;

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

describe('deploy/', () => {
  let files: string[];

  beforeAll(async () => {
    files = await filesUnder(DEPLOY);
  });

  it('holds the files users copy', () => {
    for (const expected of [
      'Dockerfile',
      'compose.yaml',
      'mirror.config.json',
      'kubernetes/base/kustomization.yaml',
      'kubernetes/base/statefulset.yaml',
      'kubernetes/base/service.yaml',
      'kubernetes/base/service-headless.yaml',
      'kubernetes/base/serviceaccount.yaml',
      'kubernetes/base/poddisruptionbudget.yaml',
      'kubernetes/base/mirror.config.json',
      'kubernetes/components/monitoring/kustomization.yaml',
      'kubernetes/components/monitoring/servicemonitor.yaml',
      'kubernetes/components/monitoring/prometheusrule.yaml',
      'kubernetes/components/monitoring/oci-mirror.dashboard.json',
      'kubernetes/overlays/monitoring/kustomization.yaml',
      'kubernetes/overlays/node-mirror/kustomization.yaml',
      'containerd/config.toml',
      'containerd/certs.d/docker.io/hosts.toml',
      'containerd/certs.d/ghcr.io/hosts.toml',
      'containerd/certs.d/quay.io/hosts.toml',
      'containerd/certs.d/registry.k8s.io/hosts.toml',
      'containerd/certs.d/_default/hosts.toml',
      'docker/daemon.json',
      'containers/registries.conf',
      'k3s/registries.yaml',
      'kind/kind-config.yaml',
      'grafana/oci-mirror.dashboard.json',
      'prometheus/oci-mirror.rules.yaml',
      'prometheus/oci-mirror.rules.test.yaml',
    ]) {
      expect(files).toContain(expected);
    }
  });

  it('parses every JSON, YAML and TOML file', async () => {
    const problems: string[] = [];
    let parsed = 0;
    for (const file of files) {
      const text = await read(file);
      try {
        if (file.endsWith('.json')) JSON.parse(text);
        else if (/\.ya?ml$/.test(file)) {
          for (const doc of parseAllDocuments(text)) if (doc.errors[0]) throw doc.errors[0];
        } else if (file.endsWith('.toml') || file.endsWith('registries.conf')) parseToml(text);
        else continue;
        parsed += 1;
      } catch (err) {
        problems.push(`${file}: ${(err as Error).message}`);
      }
    }
    expect(problems).toEqual([]);
    expect(parsed).toBeGreaterThanOrEqual(20);
  });

  it('ships a mirror config the mirror accepts, verbatim in the kustomize base', async () => {
    const file = JSON.parse(await read('mirror.config.json')) as Json;
    expect(() => parseConfig(file, {})).not.toThrow();
    expect(JSON.parse(await read('kubernetes/base/mirror.config.json'))).toEqual(file);
  });

  it('ships the same alert rules as a rules file and as a PrometheusRule, and one dashboard', async () => {
    const rules = (await readYaml('prometheus/oci-mirror.rules.yaml')) as { groups: unknown };
    const resource = (await readYaml('kubernetes/components/monitoring/prometheusrule.yaml')) as { spec: { groups: unknown } };
    expect(resource.spec.groups).toEqual(rules.groups);
    const dashboard = JSON.parse(await read('grafana/oci-mirror.dashboard.json')) as Json;
    expect(JSON.parse(await read('kubernetes/components/monitoring/oci-mirror.dashboard.json'))).toEqual(dashboard);
  });

  it('gives every alert a severity, a summary and an expression', async () => {
    const { groups } = (await readYaml('prometheus/oci-mirror.rules.yaml')) as {
      groups: { rules: { alert?: string; expr?: string; labels?: { severity?: string }; annotations?: { summary?: string } }[] }[];
    };
    const rules = groups.flatMap((g) => g.rules);
    expect(rules.map((r) => r.alert)).toEqual(
      expect.arrayContaining(['OciMirrorUpstreamDown', 'OciMirrorVerifyFailures', 'OciMirrorStoreAtBudget', 'OciMirrorVolumeNearlyFull']),
    );
    for (const rule of rules) {
      expect(rule.expr, rule.alert).toMatch(/\S/);
      expect(['critical', 'warning', 'info'], rule.alert).toContain(rule.labels?.severity);
      expect(rule.annotations?.summary, rule.alert).toMatch(/\S/);
    }
  });

  it('has a dashboard panel for each question the issue asks', async () => {
    const dashboard = JSON.parse(await read('grafana/oci-mirror.dashboard.json')) as { panels: { title: string }[] };
    const titles = dashboard.panels.map((p) => p.title.toLowerCase()).join('\n');
    for (const topic of ['hit ratio', 'bandwidth saved', 'upstream latency', 'upstream errors', 'fills', 'store size', 'evictions']) {
      expect(titles).toContain(topic);
    }
  });

  it('sends docker.io, ghcr.io, quay.io and registry.k8s.io to the mirror, from every client config', async () => {
    const registries = ['docker.io', 'ghcr.io', 'quay.io', 'registry.k8s.io'];
    for (const name of [...registries, '_default']) {
      const hosts = parseToml(await read(`containerd/certs.d/${name}/hosts.toml`)) as {
        server?: string;
        host?: Record<string, { capabilities?: string[] }>;
      };
      const mirrors = Object.entries(hosts.host ?? {});
      expect(mirrors.length, name).toBe(1);
      expect(mirrors[0]?.[1].capabilities, name).toEqual(['pull', 'resolve']);
      if (name !== '_default') expect(hosts.server, name).toMatch(/^https:\/\//);
    }
    const conf = parseToml(await read('containers/registries.conf')) as { registry: { prefix: string; mirror?: { location: string }[] }[] };
    for (const name of registries) {
      const entry = conf.registry.find((r) => r.prefix === name);
      const expected = name === 'docker.io' ? 'mirror.example.internal:5000' : `mirror.example.internal:5000/${name}`;
      expect(
        entry?.mirror?.map((m) => m.location),
        name,
      ).toEqual([expected]);
    }
    const k3s = (await readYaml('k3s/registries.yaml')) as { mirrors: Record<string, { endpoint: string[] }> };
    for (const name of [...registries, '*']) expect(k3s.mirrors[name]?.endpoint, name).toEqual(['http://mirror.example.internal:5000']);
    const daemon = JSON.parse(await read('docker/daemon.json')) as { 'registry-mirrors': string[] };
    expect(daemon['registry-mirrors']).toEqual(['http://mirror.example.internal:5000']);
  });

  it('probes /healthz and /readyz and bounds resources in the StatefulSet', async () => {
    const set = (await readYaml('kubernetes/base/statefulset.yaml')) as {
      spec: {
        template: {
          metadata: { annotations: Record<string, string> };
          spec: { containers: Record<string, { httpGet?: { path: string } } & Record<string, unknown>>[] };
        };
        volumeClaimTemplates: unknown[];
      };
    };
    const [container] = set.spec.template.spec.containers;
    expect((container?.livenessProbe as { httpGet: { path: string } }).httpGet.path).toBe('/healthz');
    expect((container?.readinessProbe as { httpGet: { path: string } }).httpGet.path).toBe('/readyz');
    expect(container?.resources).toMatchObject({
      requests: { cpu: expect.any(String), memory: expect.any(String) },
      limits: { memory: expect.any(String) },
    });
    expect(set.spec.template.metadata.annotations['prometheus.io/scrape']).toBe('true');
    expect(set.spec.volumeClaimTemplates).toHaveLength(1);
  });

  it('builds a multi-stage, non-root image with a health check and a volume for the store', async () => {
    const dockerfile = await read('Dockerfile');
    expect(dockerfile.match(/^FROM /gm)?.length).toBeGreaterThanOrEqual(2);
    expect(dockerfile).toMatch(/^USER (?!root)\S+/m);
    expect(dockerfile).toMatch(/^HEALTHCHECK /m);
    expect(dockerfile).toMatch(/^VOLUME /m);
  });
});
