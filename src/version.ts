import { readFileSync } from 'node:fs';

/**
 * The package version, read once at start-up from package.json, which sits one level
 * above both `src/` (tests) and `dist/` (the build): `--version` prints it and every
 * upstream request carries it in its User-Agent.
 */
export const VERSION: string = readPackageVersion();

function readPackageVersion(): string {
  const text = readFileSync(new URL('../package.json', import.meta.url), 'utf8');
  const { version } = JSON.parse(text) as { version?: unknown };
  if (typeof version !== 'string') throw new Error('package.json has no version');
  return version;
}
