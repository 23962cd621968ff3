// @ts-check
import js from '@eslint/js';
import { defineConfig } from 'eslint/config';
import globals from 'globals';
import tseslint from 'typescript-eslint';

/**
 * Type-aware lint over src/ and test/ (typescript-eslint `recommendedTypeChecked`, with
 * the types of tsconfig.json): a promise that is neither awaited nor handled
 * (`no-floating-promises`) or that is passed where nobody waits for it
 * (`no-misused-promises`) is an error. Layout is Prettier's job (.prettierrc.json).
 */
export default defineConfig(
  { ignores: ['dist/', 'coverage/', '.test-results/', 'data/'] },
  js.configs.recommended,
  tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      // As tsc's noUnusedLocals/noUnusedParameters: a leading underscore marks "unused on purpose".
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    // Plain JavaScript (this file, the bench's .mjs scripts) is outside tsconfig.json.
    files: ['**/*.js', '**/*.mjs'],
    extends: [tseslint.configs.disableTypeChecked],
    languageOptions: { globals: globals.node },
  },
);
