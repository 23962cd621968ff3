/**
 * Reads a parsed JSON document value by value, each at its JSON path
 * (`upstreams["ghcr.io"].timeouts.connect`), collecting every problem instead of
 * stopping at the first. Used by config.ts; knows no config keys.
 */
import { parseDuration, parseSize } from './config-units.js';

export type Obj = Readonly<Record<string, unknown>>;
export type Env = Readonly<Record<string, string | undefined>>;

export interface ConfigProblem {
  /** JSON path into the file, e.g. `upstreams["ghcr.io"].timeouts.connect`. */
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

export interface Reader {
  readonly env: Env;
  report(path: string, message: string): void;
  /** A plain object; with `keys`, any other key is reported. */
  object(value: unknown, path: string, keys: readonly string[] | undefined): Obj;
  array(value: unknown, path: string): readonly unknown[];
  string(value: unknown, path: string): string;
  boolean(value: unknown, path: string): boolean;
  integer(value: unknown, path: string, min: number, max: number): number;
  oneOf<T extends string>(value: unknown, path: string, allowed: readonly T[]): T;
  duration(value: unknown, path: string, minMs: number): number;
  size(value: unknown, path: string): number;
  /** An http(s) origin: no path beyond "/", no query, fragment or credentials. */
  url(value: unknown, path: string): string;
}

/**
 * Reads values at JSON paths. A bad value is reported and replaced by a placeholder,
 * so reading goes on and every problem is found; `buildConfig` throws before a
 * placeholder can escape. Inside a value that is not an object nothing more is
 * reported: `listen: null` is one problem, not one per missing key.
 */
export function createReader(problems: ConfigProblem[], env: Env): Reader {
  const notObjects: string[] = [];
  const report = (path: string, message: string): void => {
    if (notObjects.some((parent) => isInside(path, parent))) return;
    problems.push({ path: path === '' ? '(root)' : path, message });
  };
  const fail = <T>(path: string, expected: string, value: unknown, placeholder: T): T => {
    report(path, value === undefined ? `missing; expected ${expected}` : `expected ${expected}, got ${describeValue(value)}`);
    return placeholder;
  };
  const string = (value: unknown, path: string): string =>
    typeof value === 'string' && value !== '' ? value : fail(path, 'a non-empty string', value, '');
  return {
    env,
    report,
    string,
    object(value, path, keys) {
      if (!isPlainObject(value)) {
        fail(path, 'an object', value, undefined);
        notObjects.push(path);
        return {};
      }
      for (const key of Object.keys(value)) {
        if (keys !== undefined && !keys.includes(key)) report(joinPath(path, key), `unknown key (allowed: ${keys.join(', ')})`);
      }
      return value;
    },
    array: (value, path) => (Array.isArray(value) ? value : fail(path, 'an array', value, [])),
    boolean: (value, path) => (typeof value === 'boolean' ? value : fail(path, 'true or false', value, false)),
    integer(value, path, min, max) {
      const ok = typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max;
      return ok ? value : fail(path, `an integer from ${min} to ${max}`, value, 0);
    },
    oneOf: <T extends string>(value: unknown, path: string, allowed: readonly T[]): T =>
      allowed.find((item) => item === value) ?? fail(path, `one of ${allowed.join(', ')}`, value, allowed[0] as T),
    duration(value, path, minMs) {
      const ms = typeof value === 'string' ? tryParse(parseDuration, value) : undefined;
      if (ms === undefined) return fail(path, 'a duration like "30s"', value, 0);
      return ms >= minMs ? ms : fail(path, 'a duration greater than zero', value, 0);
    },
    size(value, path) {
      const bytes = typeof value === 'string' ? tryParse(parseSize, value) : undefined;
      if (bytes === undefined) return fail(path, 'a size like "50GiB"', value, 0);
      return bytes > 0 ? bytes : fail(path, 'a size greater than zero', value, 0);
    },
    url(value, path) {
      const text = string(value, path);
      if (text === '') return '';
      const origin = findOrigin(text);
      return origin ?? fail(path, 'an http:// or https:// URL with no path, query or credentials', value, '');
    },
  };
}

/** `https://host[:port]` when `text` is an http(s) URL with nothing after the host. */
function findOrigin(text: string): string | undefined {
  if (!URL.canParse(text)) return undefined;
  const url = new URL(text);
  const bare = url.pathname === '/' && url.search === '' && url.hash === '' && url.username === '' && url.password === '';
  return bare && (url.protocol === 'http:' || url.protocol === 'https:') ? url.origin : undefined;
}

function tryParse(parse: (text: string) => number, text: string): number | undefined {
  try {
    return parse(text);
  } catch {
    return undefined;
  }
}


function isInside(path: string, parent: string): boolean {
  return parent === '' ? path !== '' : path.startsWith(`${parent}.`) || path.startsWith(`${parent}[`);
}

export function isPlainObject(value: unknown): value is Obj {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
