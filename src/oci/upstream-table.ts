import type { UpstreamTable } from './path.js';
import { createRepositoryFilter, type RepositoryFilter } from './repository-pattern.js';

/** What routing needs of one configured upstream (a `UpstreamConfig` is one). */
export interface RoutedUpstream {
  readonly name: string;
  readonly aliases: readonly string[];
  readonly library: boolean;
  readonly repositories?: { readonly allow: readonly string[]; readonly deny: readonly string[] };
}

/** Registry hosts (keys and aliases, case-folded) → upstream key; each upstream's repository rules. */
export function createUpstreamTable(config: {
  readonly upstreams: Readonly<Record<string, RoutedUpstream>>;
  readonly defaultUpstream: string;
}): UpstreamTable {
  const hosts = new Map<string, string>();
  const filters = new Map<string, RepositoryFilter>();
  for (const upstream of Object.values(config.upstreams)) {
    hosts.set(upstream.name.toLowerCase(), upstream.name);
    for (const alias of upstream.aliases) hosts.set(alias.toLowerCase(), upstream.name);
    if (upstream.repositories) filters.set(upstream.name, createRepositoryFilter(upstream.repositories));
  }
  return {
    findUpstream: (host) => hosts.get(host),
    defaultUpstream: config.defaultUpstream,
    usesLibrary: (name) => config.upstreams[name]?.library ?? false,
    allowsRepository: (name, repository) => filters.get(name)?.allows(repository) ?? true,
  };
}
