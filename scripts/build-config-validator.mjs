// Compiles mirror.config.schema.json ahead of time into dist/config/validator.cjs (ajv
// standalone code), after tsc has built dist/config/validator.js; see that module.
import { readFileSync, writeFileSync } from 'node:fs';
import standaloneCode from 'ajv/dist/standalone/index.js';
import { compileValidator } from '../dist/config/validator.js';

const schema = JSON.parse(readFileSync(new URL('../mirror.config.schema.json', import.meta.url), 'utf8'));
const { ajv, validate } = compileValidator(schema, { source: true });
writeFileSync(new URL('../dist/config/validator.cjs', import.meta.url), standaloneCode(ajv, validate));
