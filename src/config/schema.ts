/**
 * `mirror.config.schema.json` is the one description of the config file: its keys,
 * types, defaults, and what each value may look like. It is compiled by ajv (as fastify
 * compiles its own options; see validator.ts), so a valid file comes back with every
 * default filled in, and every problem is reported at once. Messages are built from the
 * schema too: a node's `title` and `examples` say what was expected.
 */
import { readFileSync } from 'node:fs';
import type { ErrorObject } from 'ajv/dist/2020.js';
import { describeValue, joinPath, type ConfigProblem } from './errors.js';
import type { ConfigFile } from './file-types.js';
import { loadValidator } from './validator.js';

/** The subset of JSON Schema the config schema uses; enough to word a message. */
interface SchemaNode {
  readonly title?: string;
  readonly examples?: readonly unknown[];
  readonly type?: string;
  readonly $ref?: string;
  readonly enum?: readonly string[];
  readonly pattern?: string;
  readonly minimum?: number;
  readonly maximum?: number;
  readonly properties?: Readonly<Record<string, SchemaNode>>;
  readonly propertyNames?: SchemaNode;
  readonly $defs?: Readonly<Record<string, SchemaNode>>;
}

/** Beside `dist/` in a package or image, beside `src/` in the repository. */
const SCHEMA_URL = new URL('../../mirror.config.schema.json', import.meta.url);

export type SchemaResult = { readonly file: ConfigFile } | { readonly problems: readonly ConfigProblem[] };

export interface ConfigSchema {
  readonly json: SchemaNode;
  /** Validates a copy of `input` (the input is left as it was) and fills in the defaults. */
  check(input: unknown): SchemaResult;
  /** The `pattern` of `#/$defs/<name>`, for values the semantic pass checks itself. */
  pattern(def: string): RegExp;
}

let compiled: ConfigSchema | undefined;

/** Reads and compiles the schema once per process, on first use: it is a constant of the program. */
export function getConfigSchema(): ConfigSchema {
  compiled ??= compileSchema(JSON.parse(readFileSync(SCHEMA_URL, 'utf8')) as SchemaNode);
  return compiled;
}

function compileSchema(json: SchemaNode): ConfigSchema {
  const validate = loadValidator(json);
  return {
    json,
    check(input) {
      // A JSON round trip: defaults are written into the copy, and a `__proto__` key
      // stays an own (unknown) key.
      const copy = input === undefined ? undefined : (JSON.parse(JSON.stringify(input)) as unknown);
      if (validate(copy)) return { file: copy };
      return { problems: describeErrors(json, copy, validate.errors ?? []) };
    },
    pattern(def) {
      const pattern = json.$defs?.[def]?.pattern;
      if (pattern === undefined) throw new Error(`the config schema has no pattern #/$defs/${def}`);
      return new RegExp(pattern, 'u');
    },
  };
}

/** One problem per JSON path, the first ajv found there (a type error before a pattern). */
function describeErrors(schema: SchemaNode, data: unknown, errors: readonly ErrorObject[]): ConfigProblem[] {
  const problems = new Map<string, string>();
  for (const error of errors) {
    if (error.propertyName !== undefined) continue; // said again by its `propertyNames` error
    const problem = describeError(schema, error, toPath(data, error.instancePath));
    if (!problems.has(problem.path)) problems.set(problem.path, problem.message);
  }
  return [...problems].map(([path, message]) => ({ path: path === '' ? '(root)' : path, message }));
}

function describeError(schema: SchemaNode, error: ErrorObject, path: string): ConfigProblem {
  const node = (error.parentSchema ?? {}) as SchemaNode;
  const params = error.params as Record<string, unknown>;
  const named = params.additionalProperty ?? params.missingProperty ?? params.propertyName;
  const key = typeof named === 'string' ? named : '';
  switch (error.keyword) {
    case 'additionalProperties':
      if (key === 'password' && node.properties?.passwordEnv !== undefined) {
        const advice =
          'passwords do not belong in the config file: put it in an environment variable and name that variable in "passwordEnv"';
        return { path: joinPath(path, key), message: advice };
      }
      return { path: joinPath(path, key), message: `unknown key (allowed: ${Object.keys(node.properties ?? {}).join(', ')})` };
    case 'required':
    case 'dependentRequired':
      return { path: joinPath(path, key), message: `missing; expected ${describeType(resolve(schema, node.properties?.[key]))}` };
    case 'propertyNames': {
      const names = resolve(schema, node.propertyNames);
      return { path: joinPath(path, key), message: `the key must be ${names.title ?? 'valid'}, like ${listExamples(names)}` };
    }
    default:
      return { path, message: `expected ${describeExpected(node)}, got ${describeValue(error.data)}` };
  }
}

/** What a value of `node` looks like: its title and examples, else its type and bounds. */
function describeExpected(node: SchemaNode): string {
  if (node.title !== undefined && node.type !== 'object')
    return node.examples === undefined ? node.title : `${node.title} like ${listExamples(node)}`;
  if (node.enum !== undefined) return `one of ${node.enum.join(', ')}`;
  return describeType(node);
}

/** The type alone: what a missing key should have been. */
function describeType(node: SchemaNode): string {
  if (node.type === 'integer') return `an integer from ${node.minimum ?? '-∞'} to ${node.maximum ?? '∞'}`;
  const nouns: Readonly<Record<string, string>> = {
    string: 'a non-empty string',
    boolean: 'true or false',
    object: 'an object',
    array: 'an array',
  };
  return nouns[node.type ?? ''] ?? 'a valid value';
}

function listExamples(node: SchemaNode): string {
  return (node.examples ?? []).map((example) => JSON.stringify(example)).join(' or ');
}

/** Follows a local `$ref` (`#/$defs/host`) to its node. */
function resolve(schema: SchemaNode, node: SchemaNode | undefined): SchemaNode {
  if (node?.$ref === undefined) return node ?? {};
  return resolve(schema, schema.$defs?.[node.$ref.replace('#/$defs/', '')]);
}

/** `/upstreams/ghcr.io/aliases/1` → `upstreams["ghcr.io"].aliases[1]`, walking `data` to tell indexes from keys. */
function toPath(data: unknown, pointer: string): string {
  let path = '';
  let value = data;
  for (const raw of pointer.split('/').slice(1)) {
    const key = raw.replaceAll('~1', '/').replaceAll('~0', '~');
    path = Array.isArray(value) ? `${path}[${key}]` : joinPath(path, key);
    value = typeof value === 'object' && value !== null ? (value as Record<string, unknown>)[key] : undefined;
  }
  return path;
}
