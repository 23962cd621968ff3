/** What is wrong with a configuration: every problem, each at its JSON path. */

export interface ConfigProblem {
  /** JSON path into the file, e.g. `upstreams["ghcr.io"].timeouts.connect`; `(root)` for the file itself. */
  readonly path: string;
  readonly message: string;
}

/** Everything wrong with a configuration, one problem per line in `message`. */
export class ConfigError extends Error {
  readonly problems: readonly ConfigProblem[];

  constructor(problems: readonly ConfigProblem[], source?: string) {
    const where = source === undefined ? '' : ` in ${source}`;
    const lines = problems.map((p) => `  ${p.path}: ${p.message}`);
    super([`invalid configuration${where}:`, ...lines].join('\n'));
    this.name = 'ConfigError';
    this.problems = Object.freeze(problems.map((p) => Object.freeze({ ...p })));
  }
}

/** `a.b`, `upstreams["ghcr.io"]`: dots for identifiers, brackets for the rest. */
export function joinPath(parent: string, key: string): string {
  if (/^[A-Za-z_$][A-Za-z0-9_$]*$/.test(key)) return parent === '' ? key : `${parent}.${key}`;
  return `${parent}[${JSON.stringify(key)}]`;
}

export function describeValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  const text = JSON.stringify(value);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
