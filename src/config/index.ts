/**
 * `mirror.config.json` → parse once → the schema (structure, types, defaults, unknown
 * keys; every problem with its JSON path) → the semantic pass (units, environment
 * variables, rules across keys) → deep-freeze. The file speaks human units (`"5m"`,
 * `"50GiB"`); the `Config` it yields speaks milliseconds and bytes. Relative paths
 * (`store.path`, TLS files) are kept as written: relative to the working directory,
 * not to the config file.
 */
import { readFile } from 'node:fs/promises';
import type { Env } from './access.js';
import { ConfigError } from './errors.js';
import type { ConfigFile } from './file-types.js';
import { resolveConfig } from './resolve.js';
import { getConfigSchema } from './schema.js';
import type { Config } from './types.js';

export type { Env } from './access.js';
export { ConfigError, type ConfigProblem } from './errors.js';
export type { ConfigFile } from './file-types.js';
export type * from './types.js';

export interface ConfigOverrides {
  readonly port?: number;
  readonly offline?: boolean;
}

export interface LoadConfigOptions {
  /** The config file; none means the built-in defaults. */
  readonly file?: string;
  readonly env: Env;
  /** Command-line flags, applied over the file. */
  readonly overrides?: ConfigOverrides;
}

/** The built-in configuration in file form: the schema's defaults. `mirror.config.json` ships exactly this. */
export function getDefaultConfigFile(): ConfigFile {
  const result = getConfigSchema().check({});
  if (!('file' in result)) throw new Error('the config schema refuses its own defaults');
  return deepFreeze(result.file);
}

/** Validates a parsed config file and returns the frozen `Config`; any problem throws a `ConfigError`. */
export function parseConfig(input: unknown, env: Env): Config {
  return deepFreeze(buildConfig(input, env, undefined));
}

/** Reads, validates and freezes the configuration; any problem throws a `ConfigError`. */
export async function loadConfig(options: LoadConfigOptions): Promise<Config> {
  const input = options.file === undefined ? {} : await readConfigFile(options.file);
  const config = buildConfig(input, options.env, options.file);
  return deepFreeze(applyOverrides(config, options.overrides ?? {}));
}

/** The semantic pass runs on a file the schema accepted only: it relies on the types. */
function buildConfig(input: unknown, env: Env, source: string | undefined): Config {
  const checked = getConfigSchema().check(input);
  if ('problems' in checked) throw new ConfigError(checked.problems, source);
  const resolved = resolveConfig(checked.file, env);
  if ('problems' in resolved) throw new ConfigError(resolved.problems, source);
  return resolved.config;
}

async function readConfigFile(file: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === undefined) throw err;
    throw new ConfigError([{ path: file, message: `cannot read the file (${code})` }]);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    if (!(err instanceof SyntaxError)) throw err;
    throw new ConfigError([{ path: file, message: describeJsonError(text, err) }]);
  }
}

/** V8 reports a character offset (sometimes); people want a line and column. */
function describeJsonError(text: string, err: SyntaxError): string {
  const reason = err.message;
  const position = reason.includes('end of JSON input') ? String(text.length) : /at position (\d+)/.exec(reason)?.[1];
  if (position === undefined) return `invalid JSON: ${reason}`;
  const before = text.slice(0, Number(position)).split('\n');
  const column = (before.at(-1)?.length ?? 0) + 1;
  return `invalid JSON at line ${before.length}, column ${column}: ${reason}`;
}

function applyOverrides(config: Config, overrides: ConfigOverrides): Config {
  const { port, offline } = overrides;
  if (port !== undefined && !(Number.isInteger(port) && port >= 0 && port <= 65535)) {
    throw new ConfigError([{ path: '--port', message: `expected an integer from 0 to 65535, got ${port}` }]);
  }
  return {
    ...config,
    listen: port === undefined ? config.listen : { ...config.listen, port },
    offline: offline ?? config.offline,
  };
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
