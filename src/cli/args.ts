import { parseArgs } from 'node:util';
import { parseDuration, parseSize } from '../config/units.js';
import { parsePlatform, type Platform } from '../oci/platform.js';
import type { ExportRequest } from './bundle.js';
import type { WarmRequest } from './warm.js';

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
  | { readonly kind: 'warm'; readonly options: GlobalOptions; readonly request: WarmRequest; readonly json: boolean }
  | { readonly kind: 'export'; readonly options: GlobalOptions; readonly request: ExportRequest; readonly json: boolean }
  | { readonly kind: 'import'; readonly options: GlobalOptions; readonly file: string; readonly json: boolean }
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
  warm             Fetch images into the store ahead of their first pull
  export           Write cached images to one bundle (a tar of an OCI image layout)
  import           Load a bundle (or any oci-archive) into the store
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

warm [IMAGE...] (alpine:3.20, ghcr.io/org/app:1.2, quay.io/org/app@sha256:...):
  --file FILE      More images, one per line; # starts a comment
  --platform LIST  Only these platforms of multi-platform images, e.g.
                   linux/amd64,linux/arm64 (default: every platform)
  --concurrency N  Downloads at once (default 4)
  --pin            Never evict the warmed images (kept in the store's pins.json)
  --url URL        Warm through the mirror running at URL instead of the store
  --json           JSON lines instead of the live display
  Safe beside a running mirror on the same store: nothing is fetched twice. Exit
  status 1 when any image failed; run it again to resume.

export [IMAGE...] --output FILE:
  --file FILE      Images to export, one per line
  --all            Every tagged image in the store
  --repository P   Every tagged image whose registry/repository matches P
                   (* within a path component, ** across), e.g. "docker.io/library/*"
  --output FILE    Where to write the bundle (- for stdout)
  --json           JSON instead of text

import FILE:       Verifies every blob, then files each image under the registry,
                   repository and tag it came from (- reads stdin)
  --json           JSON instead of text

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
  file: { type: 'string' },
  platform: { type: 'string' },
  concurrency: { type: 'string' },
  pin: { type: 'boolean' },
  all: { type: 'boolean' },
  repository: { type: 'string' },
  output: { type: 'string', short: 'o' },
} as const;

const COMMANDS = ['serve', 'prune', 'stats', 'warm', 'export', 'import', 'help'] as const;
type CommandName = Exclude<(typeof COMMANDS)[number], 'help'>;

/** Options that only some commands take. */
const OPTION_COMMANDS: Readonly<Record<string, readonly CommandName[]>> = {
  workers: ['serve'],
  'max-size': ['prune'],
  'older-than': ['prune'],
  apply: ['prune'],
  url: ['stats', 'warm'],
  json: ['stats', 'warm', 'export', 'import'],
  file: ['warm', 'export'],
  platform: ['warm'],
  concurrency: ['warm'],
  pin: ['warm'],
  all: ['export'],
  repository: ['export'],
  output: ['export'],
};

/** Commands that take positional arguments (images, a bundle file). */
const TAKES_ARGUMENTS: readonly CommandName[] = ['warm', 'export', 'import'];

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
  if (extra.length > 0 && (name === 'help' || !TAKES_ARGUMENTS.includes(name))) return usageError(`unexpected argument "${extra[0]}"`);
  if (name === 'help') return { kind: 'help' };
  for (const [option, owners] of Object.entries(OPTION_COMMANDS)) {
    if (values[option as keyof typeof values] !== undefined && !owners.includes(name)) {
      return usageError(`--${option} belongs to the ${owners.join(', ')} command${owners.length > 1 ? 's' : ''}`);
    }
  }
  const port = values.port === undefined ? undefined : parsePort(values.port);
  if (port === null) return usageError(`--port expects an integer from 0 to 65535, got "${values.port}"`);
  const options: GlobalOptions = {
    ...(values.config === undefined ? {} : { configFile: values.config }),
    ...(port === undefined ? {} : { port }),
    ...(values.offline === true ? { offline: true } : {}),
  };
  try {
    return commandOf(name, options, values, extra);
  } catch (err) {
    return usageError((err as Error).message);
  }
}

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true; strict: true }>>['values'];

function commandOf(name: CommandName, options: GlobalOptions, values: Values, args: readonly string[]): Command {
  const json = values.json === true;
  switch (name) {
    case 'serve': {
      if (values.workers === undefined) return { kind: 'serve', options };
      return { kind: 'serve', options, workers: parseCount(values.workers, '--workers') };
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
      return { kind: 'stats', options, ...(values.url === undefined ? {} : { url: values.url }), json };
    case 'warm':
      return {
        kind: 'warm',
        options,
        json,
        request: {
          refs: args,
          ...(values.file === undefined ? {} : { file: values.file }),
          ...(values.platform === undefined ? {} : { platforms: parsePlatforms(values.platform) }),
          concurrency: values.concurrency === undefined ? DEFAULT_CONCURRENCY : parseCount(values.concurrency, '--concurrency'),
          pin: values.pin === true,
          ...(values.url === undefined ? {} : { url: values.url }),
        },
      };
    case 'export':
      if (values.output === undefined) throw new Error('export needs --output FILE (or - for stdout)');
      return {
        kind: 'export',
        options,
        json,
        request: {
          refs: args,
          ...(values.file === undefined ? {} : { file: values.file }),
          all: values.all === true,
          ...(values.repository === undefined ? {} : { repository: values.repository }),
          output: values.output,
        },
      };
    case 'import': {
      const [file, ...more] = args;
      if (file === undefined || more.length > 0) throw new Error('import takes one bundle file (or - for stdin)');
      return { kind: 'import', options, file, json };
    }
  }
}

const DEFAULT_CONCURRENCY = 4;

function parsePlatforms(text: string): Platform[] {
  return text.split(',').map((item) => {
    const platform = parsePlatform(item.trim());
    if (!platform) throw new Error(`--platform expects os/architecture[/variant], comma separated, got "${item}"`);
    return platform;
  });
}

function parseCount(text: string, flag: string): number {
  const n = /^\d{1,3}$/.test(text) ? Number(text) : 0;
  if (n < 1 || n > 256) throw new Error(`${flag} expects an integer from 1 to 256, got "${text}"`);
  return n;
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
