import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';

/**
 * The alert rules are code: `promtool test rules` runs deploy/prometheus/oci-mirror.rules.test.yaml
 * (synthetic series under which each alert must fire, stay quiet or resolve), and each
 * alert is then broken on purpose to prove its cases bind. promtool comes from Debian's
 * `prometheus` package (scripts/install-test-deps.sh); without it this test fails.
 */
const run = promisify(execFile);
const PROMETHEUS = join(import.meta.dirname, '../../deploy/prometheus');
const RULES = 'oci-mirror.rules.yaml';
const TESTS = 'oci-mirror.rules.test.yaml';

interface Rule {
  alert: string;
  expr: string;
}
interface RulesFile {
  groups: { name: string; rules: Rule[] }[];
}
interface AlertCase {
  alertname: string;
  exp_alerts: unknown[];
}
interface TestsFile {
  tests: { alert_rule_test?: AlertCase[] }[];
}

async function promtool(...args: string[]): Promise<{ ok: boolean; output: string }> {
  try {
    const { stdout, stderr } = await run('promtool', args, { cwd: PROMETHEUS });
    return { ok: true, output: stdout + stderr };
  } catch (err) {
    const failed = err as NodeJS.ErrnoException & { stdout?: string; stderr?: string };
    if (failed.code === 'ENOENT') throw new Error('promtool is missing: run scripts/install-test-deps.sh (Debian package prometheus)');
    if (typeof failed.code !== 'number') throw err;
    return { ok: false, output: `${failed.stdout ?? ''}${failed.stderr ?? ''}` };
  }
}

describe('alert rules (promtool)', () => {
  let rules: RulesFile;
  let cases: AlertCase[];
  let scratch: string;

  beforeAll(async () => {
    rules = parseYaml(await readFile(join(PROMETHEUS, RULES), 'utf8')) as RulesFile;
    cases = (parseYaml(await readFile(join(PROMETHEUS, TESTS), 'utf8')) as TestsFile).tests.flatMap((t) => t.alert_rule_test ?? []);
    scratch = await mkdtemp(join(tmpdir(), 'oci-mirror-rules-'));
    await copyFile(join(PROMETHEUS, TESTS), join(scratch, TESTS));
  });

  afterAll(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  it('passes promtool check rules and promtool test rules', async () => {
    const check = await promtool('check', 'rules', RULES);
    expect(check.output).toContain('SUCCESS');
    expect(check.ok).toBe(true);
    const tested = await promtool('test', 'rules', TESTS);
    expect(tested.output).toContain('SUCCESS');
    expect(tested.ok).toBe(true);
  });

  it('tests every alert both firing and quiet', () => {
    const alerts = rules.groups.flatMap((g) => g.rules.map((r) => r.alert));
    expect(alerts.length).toBeGreaterThanOrEqual(9);
    for (const alert of alerts) {
      const mine = cases.filter((c) => c.alertname === alert);
      expect(
        mine.some((c) => c.exp_alerts.length > 0),
        `${alert} fires somewhere`,
      ).toBe(true);
      expect(
        mine.some((c) => c.exp_alerts.length === 0),
        `${alert} is quiet somewhere`,
      ).toBe(true);
    }
  });

  it('selects the scrape job with one matcher, written the same everywhere', () => {
    const selectors = rules.groups.flatMap((g) => g.rules.flatMap((r) => [...r.expr.matchAll(/\bup\{([^}]*)\}/g)].map((m) => m[1])));
    expect(selectors.length).toBeGreaterThanOrEqual(2);
    expect(new Set(selectors)).toEqual(new Set(['job=~".*oci-mirror.*"']));
  });

  // Each alert in turn never fires (and, for OciMirrorDown, loses its absent() half):
  // the tests must notice, or they prove nothing about that alert.
  const mutants: readonly [string, (expr: string) => string][] = [
    ['OciMirrorDown', (expr) => expr.replace(/ or absent\(.*\)$/, '')],
    ...['OciMirrorUpstreamDown', 'OciMirrorUpstreamErrors', 'OciMirrorUpstreamSlow', 'OciMirrorUpstreamRateLimited']
      .concat(['OciMirrorVerifyFailures', 'OciMirrorCacheWritesFailing', 'OciMirrorStoreAtBudget', 'OciMirrorVolumeNearlyFull'])
      .map((alert): [string, (expr: string) => string] => [alert, () => 'vector(1) == 0']),
  ];

  it.each(mutants)('fails promtool test rules when %s is broken', async (alert, mutate) => {
    const broken = structuredClone(rules);
    const rule = broken.groups.flatMap((g) => g.rules).find((r) => r.alert === alert);
    expect(rule, alert).toBeDefined();
    if (rule) {
      const mutated = mutate(rule.expr.trim());
      expect(mutated).not.toBe(rule.expr.trim());
      rule.expr = mutated;
    }
    await writeFile(join(scratch, RULES), stringifyYaml(broken));
    const { ok, output } = await promtool('test', 'rules', join(scratch, TESTS));
    expect(ok).toBe(false);
    expect(output).toContain(`alertname: ${alert}`);
  });
});
