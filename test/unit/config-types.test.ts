import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

/**
 * src/config/file-types.ts is written from mirror.config.schema.json by `render` below;
 * this test fails when the two disagree. After editing the schema, regenerate with
 * `npm run config:types` (vitest's file snapshot, updated with -u).
 */
interface Node {
  readonly type?: string;
  readonly $ref?: string;
  readonly enum?: readonly string[];
  readonly properties?: Readonly<Record<string, Node>>;
  readonly required?: readonly string[];
  readonly additionalProperties?: boolean | Node;
  readonly items?: Node;
  readonly default?: unknown;
}

interface Schema extends Node {
  readonly $defs: Readonly<Record<string, Node>>;
}

const HEADER = `/**
 * The config file after validation, defaults applied: generated from
 * mirror.config.schema.json by test/unit/config-types.test.ts. Do not edit; edit the
 * schema and run \`npm run config:types\`. Keys with a default are always present.
 */
`;

/** `UpstreamFile` for `#/$defs/upstream`. */
function typeName(def: string): string {
  return `${def.charAt(0).toUpperCase()}${def.slice(1)}File`;
}

function isObject(node: Node): boolean {
  return node.type === 'object' || node.properties !== undefined;
}

function renderType(node: Node, schema: Schema, indent: string): string {
  if (node.$ref !== undefined) {
    const def = node.$ref.replace('#/$defs/', '');
    const target = schema.$defs[def];
    if (target === undefined) throw new Error(`unresolved ${node.$ref}`);
    return isObject(target) ? typeName(def) : renderType(target, schema, indent);
  }
  if (node.enum !== undefined) return node.enum.map((value) => `'${value}'`).join(' | ');
  if (node.type === 'array') return `readonly ${renderType(node.items ?? {}, schema, indent)}[]`;
  if (node.type === 'integer' || node.type === 'number') return 'number';
  if (node.type === 'string' || node.type === 'boolean') return node.type;
  if (node.properties !== undefined) return renderObject(node, schema, indent);
  if (typeof node.additionalProperties === 'object') {
    return `Readonly<Record<string, ${renderType(node.additionalProperties, schema, indent)}>>`;
  }
  throw new Error(`cannot render ${JSON.stringify(node).slice(0, 80)}`);
}

function renderObject(node: Node, schema: Schema, indent: string): string {
  const inner = `${indent}  `;
  const lines = Object.entries(node.properties ?? {}).map(([key, child]) => {
    const present = node.required?.includes(key) === true || child.default !== undefined;
    const name = /^[A-Za-z_$][\w$]*$/.test(key) ? key : JSON.stringify(key);
    return `${inner}readonly ${name}${present ? '' : '?'}: ${renderType(child, schema, inner)};`;
  });
  return `{\n${lines.join('\n')}\n${indent}}`;
}

function render(schema: Schema): string {
  const defs = Object.entries(schema.$defs).filter(([, node]) => isObject(node));
  const blocks = [
    `export interface ConfigFile ${renderObject(schema, schema, '')}`,
    ...defs.map(([def, node]) => `export interface ${typeName(def)} ${renderObject(node, schema, '')}`),
  ];
  return `${HEADER}${blocks.join('\n\n')}\n`;
}

describe('src/config/file-types.ts', () => {
  it('is what mirror.config.schema.json generates', async () => {
    const schema = JSON.parse(readFileSync(new URL('../../mirror.config.schema.json', import.meta.url), 'utf8')) as Schema;
    await expect(render(schema)).toMatchFileSnapshot('../../src/config/file-types.ts');
  });
});
