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
  | { readonly kind: 'help'; readonly command?: CommandName }
  | { readonly kind: 'version' }
  | { readonly kind: 'usage-error'; readonly message: string };

/** What `--help` says of an option; the parser reads `type` and `short`. */
export interface OptionSpec {
  readonly type: 'string' | 'boolean';
  readonly short?: string;
  /** The value's placeholder in help, e.g. FILE. */
  readonly value?: string;
  readonly help: string;
  /** The commands that take it; every command when absent. */
  readonly commands?: readonly CommandName[];
}

/** Every option, for the parser and for each command's `--help` alike. */
export const OPTIONS = {
  config: { type: 'string', value: 'FILE', help: 'Read the configuration from FILE (JSON)' },
  port: { type: 'string', value: 'N', help: 'Listen on port N, overriding listen.port (0 picks a free port)' },
  offline: { type: 'boolean', help: 'Never contact an upstream; serve only what is stored' },
  help: { type: 'boolean', short: 'h', help: 'Show help (for one command: oci-mirror COMMAND --help)' },
  version: { type: 'boolean', short: 'v', help: 'Print the version' },
  workers: {
    type: 'string',
    value: 'N',
    help: 'Run N processes sharing the port and the store (node:cluster); default 1. Each blob is fetched at most once across them',
    commands: ['serve'],
  },
  'max-size': {
    type: 'string',
    value: 'SIZE',
    help: 'Evict least recently served content until at most SIZE is stored, e.g. "40GiB"',
    commands: ['prune'],
  },
  'older-than': { type: 'string', value: 'DUR', help: 'Evict content not served for DUR, e.g. "14d"', commands: ['prune'] },
  apply: { type: 'boolean', help: 'Really delete; without it, only report what would go', commands: ['prune'] },
  url: {
    type: 'string',
    value: 'URL',
    help: 'The running mirror to ask (stats: default http://127.0.0.1:<listen.port>; warm: fetch through it instead of the store)',
    commands: ['stats', 'warm'],
  },
  json: { type: 'boolean', help: 'Print JSON (lines) instead of text', commands: ['stats', 'warm', 'export', 'import'] },
  file: { type: 'string', value: 'FILE', help: 'More images, one per line; # starts a comment', commands: ['warm', 'export'] },
  platform: {
    type: 'string',
    value: 'LIST',
    help: 'Only these platforms of multi-platform images, e.g. linux/amd64,linux/arm64 (default: every platform)',
    commands: ['warm'],
  },
  concurrency: { type: 'string', value: 'N', help: 'Downloads at once (default 4)', commands: ['warm'] },
  pin: { type: 'boolean', help: "Never evict the warmed images (kept in the store's pins.json)", commands: ['warm'] },
  all: { type: 'boolean', help: 'Every tagged image in the store', commands: ['export'] },
  repository: {
    type: 'string',
    value: 'P',
    help: 'Every tagged image whose registry/repository matches P (* within a path component, ** across), e.g. "docker.io/library/*"',
    commands: ['export'],
  },
  output: { type: 'string', short: 'o', value: 'FILE', help: 'Where to write the bundle (- for stdout)', commands: ['export'] },
} as const satisfies Record<string, OptionSpec>;

export const COMMANDS = ['serve', 'prune', 'stats', 'warm', 'export', 'import', 'help'] as const;
export type CommandName = Exclude<(typeof COMMANDS)[number], 'help'>;

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
  const [name = 'serve', ...extra] = positionals;
  if (values.help === true)
    return positionals.length > 0 && isCommandName(name) && name !== 'help' ? { kind: 'help', command: name } : { kind: 'help' };
  if (values.version === true) return { kind: 'version' };
  if (!isCommandName(name)) return usageError(`unknown command "${name}"`);
  if (extra.length > 0 && (name === 'help' || !TAKES_ARGUMENTS.includes(name))) return usageError(`unexpected argument "${extra[0]}"`);
  if (name === 'help') return { kind: 'help' };
  for (const [option, spec] of Object.entries(OPTIONS) as [keyof typeof OPTIONS, OptionSpec][]) {
    const owners = spec.commands;
    if (owners && values[option] !== undefined && !owners.includes(name)) {
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
