import { execFile } from 'node:child_process';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Namespace, ServiceAccount, ConfigMap, Service } from 'kubernetes-models/v1';
import { StatefulSet } from 'kubernetes-models/apps/v1';
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1';
import { PrometheusRule, ServiceMonitor } from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments, parse as parseYaml } from 'yaml';

/**
 * deploy/kubernetes is rendered by `kubectl kustomize` (kustomize v4+, for components),
 * variant by variant, and every rendered object is validated against the Kubernetes API
 * schemas that kubernetes-models compiles from the OpenAPI spec (the Prometheus
 * Operator's CRD schemas for ServiceMonitor and PrometheusRule).
 */
const run = promisify(execFile);
const DEPLOY = join(import.meta.dirname, '../../deploy');
const KUBERNETES = join(DEPLOY, 'kubernetes');

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
}

/** One compiled schema per apiVersion/kind the variants may render; anything else is an error. */
const MODELS: Record<string, new (data: never) => { validate(): void }> = {
  'v1/Namespace': Namespace,
  'v1/ServiceAccount': ServiceAccount,
  'v1/ConfigMap': ConfigMap,
  'v1/Service': Service,
  'apps/v1/StatefulSet': StatefulSet,
  'policy/v1/PodDisruptionBudget': PodDisruptionBudget,
  'monitoring.coreos.com/v1/ServiceMonitor': ServiceMonitor,
  'monitoring.coreos.com/v1/PrometheusRule': PrometheusRule,
};

function schemaProblems(object: K8sObject): string | undefined {
  const Model = MODELS[`${object.apiVersion}/${object.kind}`];
  if (!Model) return `no schema for ${object.apiVersion} ${object.kind}`;
  try {
    new Model(structuredClone(object) as never).validate();
    return undefined;
  } catch (err) {
    // ajv's ValidationError: an Error carrying the schema errors (`validation: true`).
    if (err instanceof Error && (err as Error & { validation?: unknown }).validation === true) return err.message;
    throw err;
  }
}

async function render(dir: string): Promise<K8sObject[]> {
  let stdout: string;
  try {
    ({ stdout } = await run('kubectl', ['kustomize', dir], { maxBuffer: 16 * 1024 * 1024 }));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new Error('kubectl is missing: see scripts/install-test-deps.sh');
    throw err;
  }
  return parseAllDocuments(stdout).map((doc) => doc.toJS() as K8sObject);
}

/** `Kind name`, with a generated ConfigMap's content hash shown as `<hash>`. */
const listed = (objects: readonly K8sObject[]): string[] =>
  objects.map((o) => `${o.kind} ${o.metadata.name.replace(/^(oci-mirror-(?:config|nginx))-[a-z0-9]{10}$/, '$1-<hash>')}`);

const BASE = [
  'Namespace oci-mirror',
  'ServiceAccount oci-mirror',
  'ConfigMap oci-mirror-config-<hash>',
  'Service oci-mirror',
  'Service oci-mirror-headless',
  'StatefulSet oci-mirror',
  'PodDisruptionBudget oci-mirror',
];
const MONITORED = [
  ...BASE.slice(0, 3),
  'ConfigMap oci-mirror-dashboard',
  ...BASE.slice(3),
  'PrometheusRule oci-mirror',
  'ServiceMonitor oci-mirror',
];
const FRONTED = [...BASE.slice(0, 3), 'ConfigMap oci-mirror-nginx-<hash>', ...BASE.slice(3)];
const VARIANTS: Record<string, readonly string[]> = {
  base: BASE,
  'overlays/monitoring': MONITORED,
  'overlays/node-mirror': MONITORED,
  'overlays/nginx-front': FRONTED,
};

const find = (objects: readonly K8sObject[], kind: string, name?: string): K8sObject => {
  const found = objects.find((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  if (!found) throw new Error(`no ${kind} ${name ?? ''} rendered`);
  return found;
};

interface PodTemplate {
  metadata: { labels: Record<string, string> };
  spec: {
    serviceAccountName?: string;
    automountServiceAccountToken?: boolean;
    topologySpreadConstraints?: { topologyKey: string }[];
    securityContext?: { runAsNonRoot?: boolean };
    containers: {
      name: string;
      ports?: { containerPort: number }[];
      securityContext?: { readOnlyRootFilesystem?: boolean; allowPrivilegeEscalation?: boolean };
      volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
    }[];
    volumes: { name: string; configMap?: { name: string } }[];
  };
}
const podTemplate = (objects: readonly K8sObject[]): PodTemplate => find(objects, 'StatefulSet').spec?.template as PodTemplate;
const configMapOf = (template: PodTemplate): string | undefined => template.spec.volumes.find((v) => v.name === 'config')?.configMap?.name;

describe('deploy/kubernetes (kustomize)', () => {
  const rendered = new Map<string, K8sObject[]>();

  beforeAll(async () => {
    for (const variant of Object.keys(VARIANTS)) rendered.set(variant, await render(join(KUBERNETES, variant)));
  });

  const variant = (name: string): K8sObject[] => rendered.get(name) ?? [];

  it.each(Object.entries(VARIANTS))('renders %s to exactly these objects, each valid against its API schema', (name, expected) => {
    const objects = variant(name);
    expect(listed(objects)).toEqual(expected);
    expect(objects.map((o) => [listed([o])[0], schemaProblems(o)]).filter(([, problem]) => problem)).toEqual([]);
    for (const object of objects)
      if (object.kind !== 'Namespace') expect((object.metadata as { namespace?: string }).namespace).toBe('oci-mirror');
  });

  it('rejects an object its schema forbids (the validation binds)', () => {
    const set = structuredClone(find(variant('base'), 'StatefulSet'));
    expect(schemaProblems(set)).toBeUndefined();
    (set.spec as Record<string, unknown>).replicas = 'two';
    expect(schemaProblems(set)).toMatch(/replicas must be integer/);
    const monitor = structuredClone(find(variant('overlays/monitoring'), 'ServiceMonitor'));
    (monitor.spec as { endpoints: { port: unknown }[] }).endpoints[0] = { port: 5000 };
    expect(schemaProblems(monitor)).toMatch(/port must be string/);
  });

  it('governs the StatefulSet with a headless Service and runs it without an API token', () => {
    const objects = variant('base');
    const set = find(objects, 'StatefulSet');
    const governing = find(objects, 'Service', set.spec?.serviceName as string);
    expect(governing.spec).toMatchObject({ clusterIP: 'None' });
    expect(find(objects, 'Service', 'oci-mirror').spec?.clusterIP).toBeUndefined();
    const template = podTemplate(objects);
    expect(template.spec.serviceAccountName).toBe('oci-mirror');
    expect(template.spec.automountServiceAccountToken).toBe(false);
    expect((find(objects, 'ServiceAccount', 'oci-mirror') as { automountServiceAccountToken?: boolean }).automountServiceAccountToken).toBe(
      false,
    );
    expect(template.spec.securityContext?.runAsNonRoot).toBe(true);
    expect(template.spec.containers[0]?.securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false });
    expect(template.spec.topologySpreadConstraints?.map((c) => c.topologyKey)).toContain('kubernetes.io/hostname');
  });

  it('bounds disruptions to the mirror pods with a PodDisruptionBudget', () => {
    const objects = variant('base');
    const budget = find(objects, 'PodDisruptionBudget');
    const selector = (budget.spec?.selector as { matchLabels: Record<string, string> }).matchLabels;
    expect(podTemplate(objects).metadata.labels).toMatchObject(selector);
    expect(budget.spec?.maxUnavailable).toBe(1);
  });

  it('mounts the generated config, equal to deploy/mirror.config.json, and rolls the pods when it changes', async () => {
    const objects = variant('base');
    const name = configMapOf(podTemplate(objects));
    const configMap = find(objects, 'ConfigMap', name);
    const file = JSON.parse(await readFile(join(DEPLOY, 'mirror.config.json'), 'utf8')) as unknown;
    expect(JSON.parse(configMap.data?.['mirror.config.json'] ?? 'null')).toEqual(file);

    const copy = await mkdtemp(join(tmpdir(), 'oci-mirror-kustomize-'));
    try {
      await cp(join(KUBERNETES, 'base'), copy, { recursive: true });
      const changed = { ...(file as Record<string, unknown>), offline: true };
      await writeFile(join(copy, 'mirror.config.json'), JSON.stringify(changed));
      const changedName = configMapOf(podTemplate(await render(copy)));
      expect(changedName).toMatch(/^oci-mirror-config-[a-z0-9]{10}$/);
      expect(changedName).not.toBe(name);
    } finally {
      await rm(copy, { recursive: true, force: true });
    }
  });

  it('adds the Prometheus Operator resources only with the monitoring component', async () => {
    expect(variant('base').filter((o) => o.apiVersion.startsWith('monitoring.coreos.com/'))).toEqual([]);
    const objects = variant('overlays/monitoring');
    const monitor = find(objects, 'ServiceMonitor');
    const selector = (monitor.spec?.selector as { matchLabels: Record<string, string> }).matchLabels;
    const scraped = objects.filter((o) => o.kind === 'Service' && Object.entries(selector).every(([k, v]) => o.metadata.labels?.[k] === v));
    expect(scraped.map((s) => s.metadata.name)).toEqual(['oci-mirror']);

    const rules = parseYaml(await readFile(join(DEPLOY, 'prometheus/oci-mirror.rules.yaml'), 'utf8')) as { groups: unknown };
    expect(find(objects, 'PrometheusRule').spec?.groups).toEqual(rules.groups);
    const dashboard = find(objects, 'ConfigMap', 'oci-mirror-dashboard');
    expect(dashboard.metadata.labels?.grafana_dashboard).toBe('1');
    const source = JSON.parse(await readFile(join(DEPLOY, 'grafana/oci-mirror.dashboard.json'), 'utf8')) as unknown;
    expect(JSON.parse(dashboard.data?.['oci-mirror.dashboard.json'] ?? 'null')).toEqual(source);
  });

  it('exposes the node-mirror variant on every node at 30500, with two replicas', () => {
    const objects = variant('overlays/node-mirror');
    expect(find(objects, 'Service', 'oci-mirror').spec).toMatchObject({ type: 'NodePort', ports: [{ port: 5000, nodePort: 30500 }] });
    expect(find(objects, 'StatefulSet').spec?.replicas).toBe(2);
    expect(find(variant('base'), 'StatefulSet').spec?.replicas).toBe(1);
  });

  it('puts nginx beside the mirror with the store read-only, the mirror behind it in front mode', async () => {
    const objects = variant('overlays/nginx-front');
    const template = podTemplate(objects);
    const [mirror, nginx] = template.spec.containers;
    expect(nginx?.name).toBe('nginx');
    expect(nginx?.ports).toEqual([expect.objectContaining({ containerPort: 5000 })]);
    expect(mirror?.ports ?? []).toEqual([]);
    expect(nginx?.volumeMounts).toContainEqual({ name: 'store', mountPath: '/var/lib/oci-mirror', readOnly: true });
    expect(nginx?.securityContext).toMatchObject({ readOnlyRootFilesystem: true, allowPrivilegeEscalation: false });

    const file = JSON.parse(await readFile(join(DEPLOY, 'mirror.config.json'), 'utf8')) as Record<string, unknown>;
    const config = find(objects, 'ConfigMap', configMapOf(template)).data?.['mirror.config.json'];
    expect(JSON.parse(config ?? 'null')).toEqual({
      ...file,
      listen: { host: '127.0.0.1', port: 5001, trustedProxies: 1 },
      front: { mode: 'nginx', internalPrefix: '/_store/' },
    });
    const nginxMap = template.spec.volumes.find((v) => v.name === 'nginx-config')?.configMap?.name;
    const conf = find(objects, 'ConfigMap', nginxMap).data?.['nginx.conf'] ?? '';
    const directives = (text: string): string[] => text.split('\n').filter((line) => !line.startsWith('#'));
    const front = await readFile(join(DEPLOY, 'nginx/front.conf'), 'utf8');
    expect(directives(conf)).toEqual(directives(front.replace('server mirror:5000;', 'server 127.0.0.1:5001;')));
  });
});
