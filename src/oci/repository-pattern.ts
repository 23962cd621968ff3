/**
 * Repository patterns for per-upstream allow and deny lists. A pattern is a repository
 * name (as the upstream knows it: `library/alpine` on Docker Hub) in which `*` stands
 * for any characters within one path component and `**` for any characters across
 * components: `library/*`, `org/**`, `team-*\/app`. `export --all` selects with the same
 * patterns over `registry/repository` (`docker.io/library/*`, `ghcr.io/**`).
 */
/** `**`, or a component that starts with a letter, digit or `*` (never `.`, `..`, `_x`). */
const COMPONENT = /^(?:\*\*|[a-z0-9*][a-z0-9._*-]*)$/;

/** Why `pattern` is not one, or undefined when it is. */
export function findPatternProblem(pattern: string): string | undefined {
  if (pattern === '' || pattern.length > 255) return 'expected a repository pattern of 1 to 255 characters';
  if (!pattern.split('/').every((part) => COMPONENT.test(part))) {
    return 'expected lowercase name components, "*" or "**", separated by "/"';
  }
  return undefined;
}

export function compilePattern(pattern: string): RegExp {
  const body = pattern
    .split(/(\*\*|\*)/)
    .map((part) => (part === '**' ? '.*' : part === '*' ? '[^/]*' : part.replace(/[.+?^${}()|[\]\\-]/g, '\\$&')))
    .join('');
  return new RegExp(`^${body}$`);
}

export interface RepositoryFilter {
  allows(repository: string): boolean;
}

/** Deny wins; an empty allow list allows every repository that is not denied. */
export function createRepositoryFilter(rules: { readonly allow: readonly string[]; readonly deny: readonly string[] }): RepositoryFilter {
  const allow = rules.allow.map(compilePattern);
  const deny = rules.deny.map(compilePattern);
  return {
    allows: (repository) => !deny.some((re) => re.test(repository)) && (allow.length === 0 || allow.some((re) => re.test(repository))),
  };
}
