import { parseArgs } from 'node:util';
import { parseDuration, parseSize } from '../config-units.js';

/** Flags every command takes. */
export interface GlobalOptions {
  readonly configFile?: string;
  readonly port?: number;
  readonly offline?: boolean;
}

/** What the command line asks for; `main.ts` acts on it. */
export type Command =
  | { readonly kind: 'serve'; readonly options: GlobalOptions; readonly workers?: number }
  | {
      readonly kind: 'prune';
      readonly options: GlobalOptions;
      readonly targetBytes?: number;
      readonly olderThanMs?: number;
      readonly apply: boolean;
    }
  | { readonly kind: 'stats'; readonly options: GlobalOptions; readonly url?: string; readonly json: boolean }
  | { readonly kind: 'help' }
  | { readonly kind: 'version' }
  | { readonly kind: 'usage-error'; readonly message: string };

/** Used by `--help` and the `help` command, and after every usage error. */
export const USAGE = `Usage: oci-mirror [command] [options]

A pull-through caching mirror for OCI and Docker container registries.

Commands:
  serve            Run the mirror (the default when no command is given)
  prune            Evict from the store now, by size and/or age (a dry run unless --apply)
  stats            Show the store's size, top repositories and a running mirror's hit ratio
  help             Show this text

Options:
  --config FILE    Read the configuration from FILE (JSON)
  --port N         Listen on port N, overriding listen.port (0 picks a free port)
  --offline        Never contact an upstream; serve only what is stored
  -h, --help       Show this text
  -v, --version    Print the version

serve:
  --workers N      Run N processes sharing the port and the store (node:cluster);
                   default 1. Each fetches a blob at most once across all of them.

prune (safe while the mirror runs; one process evicts at a time):
  --max-size SIZE  Evict least recently served content until at most SIZE is
                   stored, e.g. "40GiB"
  --older-than DUR Evict content not served for DUR, e.g. "14d"
  --apply          Really delete; without it, only report what would go
  Pinned images (store.pins) are never pruned.

stats:
  --url URL        Where the running mirror is, for its hit ratio (default
                   http://127.0.0.1:<listen.port>)
  --json           Print JSON instead of text

Configuration:
  With --config FILE, FILE is read. Otherwise ./mirror.config.json is read if it
  exists in the working directory, and the built-in defaults are used if it does not.
  A file is merged onto the defaults section by section; "upstreams", when given,
  replaces the default upstream set. Passwords come from environment variables
  named by "passwordEnv", never from the file.

Example:
  oci-mirror serve --config /etc/oci-mirror/mirror.config.json --port 5000
`;

const OPTIONS = {
  config: { type: 'string' },
  port: { type: 'string' },
  offline: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'v' },
  workers: { type: 'string' },
  'max-size': { type: 'string' },
  'older-than': { type: 'string' },
  apply: { type: 'boolean' },
  url: { type: 'string' },
  json: { type: 'boolean' },
} as const;

const COMMANDS = ['serve', 'prune', 'stats', 'help'] as const;

/** Options that belong to one command only. */
const COMMAND_OPTIONS: Readonly<Record<string, readonly string[]>> = {
  serve: ['workers'],
  prune: ['max-size', 'older-than', 'apply'],
  stats: ['url', 'json'],
};

/** Parses `argv` (without the node binary and script). Pure: never prints or exits. */
export function parseCommandLine(argv: readonly string[]): Command {
  let parsed;
  try {
    parsed = parseArgs({ args: [...argv], options: OPTIONS, allowPositionals: true, strict: true });
  } catch (err) {
    // Node appends advice about `--` to unknown options; the first sentence is the point.
    return usageError((err instanceof Error ? err.message : String(err)).split('. To specify')[0] ?? '');
  }
  const { values, positionals } = parsed;
  if (values.help === true) return { kind: 'help' };
  if (values.version === true) return { kind: 'version' };
  const [name = 'serve', ...extra] = positionals;
  if (!isCommandName(name)) return usageError(`unknown command "${name}"`);
  if (extra.length > 0) return usageError(`unexpected argument "${extra[0]}"`);
  if (name === 'help') return { kind: 'help' };
  for (const [owner, names] of Object.entries(COMMAND_OPTIONS)) {
    const stray = names.find((n) => values[n as keyof typeof values] !== undefined);
    if (stray && owner !== name) return usageError(`--${stray} belongs to the ${owner} command`);
  }
  const port = values.port === undefined ? undefined : parsePort(values.port);
  if (port === null) return usageError(`--port expects an integer from 0 to 65535, got "${values.port}"`);
  const options: GlobalOptions = {
    ...(values.config === undefined ? {} : { configFile: values.config }),
    ...(port === undefined ? {} : { port }),
    ...(values.offline === true ? { offline: true } : {}),
  };
  try {
    return commandOf(name, options, values);
  } catch (err) {
    return usageError((err as Error).message);
  }
}

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true; strict: true }>>['values'];

function commandOf(name: 'serve' | 'prune' | 'stats', options: GlobalOptions, values: Values): Command {
  switch (name) {
    case 'serve': {
      if (values.workers === undefined) return { kind: 'serve', options };
      const workers = /^\d{1,3}$/.test(values.workers) ? Number(values.workers) : 0;
      if (workers < 1 || workers > 256) throw new Error(`--workers expects an integer from 1 to 256, got "${values.workers}"`);
      return { kind: 'serve', options, workers };
    }
    case 'prune':
      if (values['max-size'] === undefined && values['older-than'] === undefined) {
        throw new Error('prune needs --max-size SIZE and/or --older-than DURATION');
      }
      return {
        kind: 'prune',
        options,
        ...(values['max-size'] === undefined ? {} : { targetBytes: parseSize(values['max-size']) }),
        ...(values['older-than'] === undefined ? {} : { olderThanMs: parseDuration(values['older-than']) }),
        apply: values.apply === true,
      };
    case 'stats':
      return { kind: 'stats', options, ...(values.url === undefined ? {} : { url: values.url }), json: values.json === true };
  }
}

function isCommandName(name: string): name is (typeof COMMANDS)[number] {
  return (COMMANDS as readonly string[]).includes(name);
}

/** `null` when `text` is not a port number. */
function parsePort(text: string): number | null {
  if (!/^\d{1,5}$/.test(text)) return null;
  const port = Number(text);
  return port <= 65535 ? port : null;
}

function usageError(message: string): Command {
  return { kind: 'usage-error', message };
}
