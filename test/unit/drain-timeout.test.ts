import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { parseConfig } from '../../src/config/index.js';

const STATEFULSET = join(import.meta.dirname, '../../deploy/kubernetes/base/statefulset.yaml');

describe('listen.drainTimeout', () => {
  it('defaults to less than the shipped StatefulSet grace period, leaving time to close the store', async () => {
    const config = parseConfig({}, {});
    const doc = parseYaml(await readFile(STATEFULSET, 'utf8')) as {
      spec: { template: { spec: { terminationGracePeriodSeconds: number } } };
    };
    const graceMs = doc.spec.template.spec.terminationGracePeriodSeconds * 1000;
    expect(config.listen.drainTimeoutMs).toBe(30_000);
    expect(config.listen.drainTimeoutMs).toBeLessThanOrEqual(graceMs - 10_000);
  });

  it('accepts 0s: end every transfer at once', () => {
    expect(parseConfig({ listen: { drainTimeout: '0s' } }, {}).listen.drainTimeoutMs).toBe(0);
  });
});
