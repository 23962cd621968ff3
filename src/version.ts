import { readFileSync } from 'node:fs';

/** The package version, for `--version` and `oci_mirror_build_info`. package.json sits one level above both `src/` and `dist/`. */
export function packageVersion(): string {
  const text = readFileSync(new URL('../package.json', import.meta.url), 'utf8');
  const { version } = JSON.parse(text) as { version?: unknown };
  return typeof version === 'string' ? version : 'unknown';
}
