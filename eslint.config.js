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
const NO_ENUMS = {
  selector: 'TSEnumDeclaration',
  message: 'Use a union of string literals or an `as const` object instead of an enum.',
};

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
      'no-restricted-syntax': ['error', NO_ENUMS],
    },
  },
  {
    files: ['src/**/*.ts'],
    ignores: ['src/main.ts'],
    rules: {
      'no-restricted-syntax': [
        'error',
        NO_ENUMS,
        {
          // A bare pipe() neither forwards errors nor destroys the other side.
          selector: "CallExpression[callee.property.name='pipe']",
          message: 'Use pipeline() from node:stream/promises.',
        },
        {
          selector: "CallExpression[callee.object.name='process'][callee.property.name='exit']",
          message: 'Only main.ts ends the process; return or throw instead.',
        },
      ],
    },
  },
  {
    // Tests stand in for interfaces with plain objects (an async method that answers at
    // once is the point of a stub) and hand methods to expect(); the production rules for
    // promises stay on.
    files: ['test/**/*.ts'],
    rules: {
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/unbound-method': 'off',
      // expect.any() and JSON bodies are `any` by design in assertions.
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
    },
  },
  {
    // Plain JavaScript (this file, the bench's .mjs scripts) is outside tsconfig.json.
    files: ['**/*.js', '**/*.mjs'],
    extends: [tseslint.configs.disableTypeChecked],
    languageOptions: { globals: globals.node },
  },
);
