import type { SystemName } from './systems.js';

/** One figure a scenario measures per run. */
export interface Metric {
  readonly key: string;
  readonly label: string;
  readonly better: 'higher' | 'lower';
  readonly digits: number;
}

/** A target set by an issue, checked on ours' median: `op` a goal worked out from every system's medians. */
export interface Target {
  readonly metric: string;
  /** Whose median is checked; default `ours`. */
  readonly system?: SystemName;
  readonly text: string;
  readonly op: '>=' | '<=' | '<' | '=';
  readonly goal: (medians: Readonly<Record<string, number>>) => number;
  /** The issues that ask for it (RESULTS.md lists targets by issue; one asked twice is under both). */
  readonly issues: readonly number[];
}

export function meets(target: Target, ours: number, medians: Readonly<Record<string, number>>): boolean {
  const goal = target.goal(medians);
  if (target.op === '>=') return ours >= goal;
  if (target.op === '<=') return ours <= goal;
  if (target.op === '<') return ours < goal;
  return Math.abs(ours - goal) <= 0.005 * Math.max(1, Math.abs(goal));
}

export interface Scenario<Ctx> {
  readonly id: string;
  readonly title: string;
  readonly systems: readonly SystemName[];
  readonly metrics: readonly Metric[];
  readonly targets: readonly Target[];
  /** Once per system before the first round (untimed). */
  prepare?(ctx: Ctx, system: SystemName): Promise<void>;
  /** One run of one system; `round` counts from 0. */
  measure(ctx: Ctx, system: SystemName, round: number): Promise<Record<string, number>>;
}

export interface Sample {
  readonly system: SystemName;
  readonly round: number;
  readonly values: Readonly<Record<string, number>>;
}

export interface ScenarioResult {
  readonly scenario: Scenario<unknown>;
  readonly samples: readonly Sample[];
  readonly seconds: number;
}

/**
 * Runs each system once per round, rotating who goes first (round 0: A B C D, round 1:
 * B C D A, …), so a slow moment of the shared machine lands on every system alike.
 */
export async function runScenario<Ctx>(
  scenario: Scenario<Ctx>,
  ctx: Ctx,
  rounds: number,
  log: (line: string) => void,
): Promise<ScenarioResult> {
  const started = performance.now();
  for (const system of scenario.systems) await scenario.prepare?.(ctx, system);
  const samples: Sample[] = [];
  const n = scenario.systems.length;
  for (let round = 0; round < rounds; round++) {
    for (let i = 0; i < n; i++) {
      const system = scenario.systems[(round + i) % n] as SystemName;
      const values = await scenario.measure(ctx, system, round);
      samples.push({ system, round, values });
      log(`  ${scenario.id} round ${round + 1}/${rounds} ${system}: ${formatValues(scenario.metrics, values)}`);
    }
  }
  return { scenario: scenario, samples, seconds: (performance.now() - started) / 1000 };
}

function formatValues(metrics: readonly Metric[], values: Readonly<Record<string, number>>): string {
  return metrics.map((m) => `${m.label} ${format(values[m.key], m.digits)}`).join(', ');
}

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  if (sorted.length === 0) return Number.NaN;
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

export function format(value: number | undefined, digits: number): string {
  if (value === undefined || Number.isNaN(value)) return '–';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }).replace(/,/g, ' ');
}

export function mediansOf(result: ScenarioResult, key: string): Record<string, number> {
  const medians: Record<string, number> = {};
  for (const system of result.scenario.systems) {
    medians[system] = median(result.samples.filter((s) => s.system === system).map((s) => s.values[key] ?? Number.NaN));
  }
  return medians;
}

export interface Verdict {
  readonly scenario: string;
  readonly metric: string;
  readonly digits: number;
  readonly target: string;
  readonly issues: readonly number[];
  readonly ours: number;
  /** The figure the target asks for, on this run's medians. */
  readonly goal: number;
  readonly met: boolean;
}

export function verdicts(results: readonly ScenarioResult[]): Verdict[] {
  const out: Verdict[] = [];
  for (const result of results) {
    for (const target of result.scenario.targets) {
      const metric = result.scenario.metrics.find((m) => m.key === target.metric);
      const medians = mediansOf(result, target.metric);
      const ours = medians[target.system ?? 'ours'] ?? Number.NaN;
      out.push({
        scenario: result.scenario.title,
        metric: `${metric?.label ?? target.metric}${target.system ? ` (${target.system})` : ''}`,
        digits: metric?.digits ?? 2,
        target: target.text,
        issues: target.issues,
        ours,
        goal: target.goal(medians),
        met: meets(target, ours, medians),
      });
    }
  }
  return out;
}

const COLUMNS: readonly { system: SystemName; title: string }[] = [
  { system: 'ours', title: 'ours' },
  { system: 'ours-w2', title: 'ours `--workers 2`' },
  { system: 'ours-front', title: 'ours behind nginx front' },
  { system: 'ours-sharded', title: 'ours ×3 sharded' },
  { system: 'distribution', title: 'Distribution proxy' },
  { system: 'nginx', title: 'nginx sendfile' },
];

/** The medians table: one row per scenario and metric, ratios ours ÷ theirs, the target. */
export function medianTable(results: readonly ScenarioResult[]): string {
  const lines = [
    `| scenario | metric | ${COLUMNS.map((c) => c.title).join(' | ')} | ours ÷ Distribution | ours ÷ nginx | target | met |`,
    `|---|---|${COLUMNS.map(() => '--:').join('|')}|--:|--:|---|---|`,
  ];
  for (const result of results) {
    for (const metric of result.scenario.metrics) {
      const medians = mediansOf(result, metric.key);
      const cells = COLUMNS.map((c) => (c.system in medians ? format(medians[c.system], metric.digits) : ''));
      const ours = medians['ours'] ?? Number.NaN;
      const ratio = (of: string): string => (medians[of] ? `${format(ours / medians[of], 2)}×` : '');
      const targets = result.scenario.targets.filter((t) => t.metric === metric.key);
      const met = targets.map((t) => (meets(t, medians[t.system ?? 'ours'] ?? Number.NaN, medians) ? 'yes' : '**no**')).join(', ');
      const text = targets.map((t) => `${t.text}${t.system ? ` (${t.system})` : ''}`).join(', ');
      lines.push(
        `| ${result.scenario.title} | ${metric.label} | ${cells.join(' | ')} | ${ratio('distribution')} | ${ratio('nginx')} | ${text} | ${met} |`,
      );
    }
  }
  return lines.join('\n');
}

/** Every run's figures, so the spread (the shared machine's noise) is in view. */
export function roundsTable(results: readonly ScenarioResult[]): string {
  const lines = ['| scenario | metric | system | runs (in round order) | spread (max−min)/median |', '|---|---|---|---|--:|'];
  for (const result of results) {
    for (const metric of result.scenario.metrics) {
      for (const system of result.scenario.systems) {
        const values = result.samples.filter((s) => s.system === system).map((s) => s.values[metric.key] ?? Number.NaN);
        const mid = median(values);
        const spread = mid ? (Math.max(...values) - Math.min(...values)) / Math.abs(mid) : 0;
        const runs = values.map((v) => format(v, metric.digits)).join(', ');
        lines.push(`| ${result.scenario.id} | ${metric.label} | ${system} | ${runs} | ${format(spread * 100, 0)} % |`);
      }
    }
  }
  return lines.join('\n');
}
