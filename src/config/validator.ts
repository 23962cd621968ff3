/**
 * The compiled schema. `npm run build` compiles it ahead of time into
 * `dist/config/validator.cjs` with ajv's standalone code (scripts/build-config-validator.mjs,
 * as fastify builds its own options validator), so start-up neither loads ajv's compiler
 * nor generates code: tens of milliseconds instead of several hundred. Run from `src/`
 * (the tests), the schema is compiled here on first use, with the same options.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { Ajv2020, ValidateFunction } from 'ajv/dist/2020.js';
import type { ConfigFile } from './file-types.js';

const require = createRequire(import.meta.url);
const PRECOMPILED = fileURLToPath(new URL('./validator.cjs', import.meta.url));

export interface CompiledValidator {
  readonly ajv: Ajv2020;
  readonly validate: ValidateFunction<ConfigFile>;
}

/**
 * `allErrors`: every problem at once. `useDefaults`: a valid file comes back with the
 * defaults filled in. `verbose`: each error carries the schema node and the value its
 * message is worded from. `strict`: a mistake in the schema fails the build.
 */
export function compileValidator(json: object, options: { readonly source?: boolean } = {}): CompiledValidator {
  // Loaded here, not imported: with the precompiled validator, ajv's compiler is never loaded.
  const { Ajv2020: Ajv } = require('ajv/dist/2020.js') as typeof import('ajv/dist/2020.js');
  const ajv = new Ajv({ allErrors: true, useDefaults: true, verbose: true, strict: true, code: { source: options.source ?? false } });
  return { ajv, validate: ajv.compile<ConfigFile>(json) };
}

export function loadValidator(json: object): ValidateFunction<ConfigFile> {
  if (existsSync(PRECOMPILED)) return require(PRECOMPILED) as ValidateFunction<ConfigFile>;
  return compileValidator(json).validate;
}
