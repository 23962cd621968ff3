import { parseArgs } from 'node:util';

/** Flags every command takes. */
export interface GlobalOptions {
  readonly configFile?: string;
  readonly port?: number;
  readonly offline?: boolean;
}

/** What the command line asks for; `main.ts` acts on it. */
export type Command =
  | { readonly kind: 'serve'; readonly options: GlobalOptions }
  | { readonly kind: 'help' }
  | { readonly kind: 'version' }
  | { readonly kind: 'usage-error'; readonly message: string };

/** Used by `--help` and the `help` command, and after every usage error. */
export const USAGE = `Usage: oci-mirror [command] [options]

A pull-through caching mirror for OCI and Docker container registries.

Commands:
  serve            Run the mirror (the default when no command is given)
  help             Show this text

Options:
  --config FILE    Read the configuration from FILE (JSON)
  --port N         Listen on port N, overriding listen.port (0 picks a free port)
  --offline        Never contact an upstream; serve only what is stored
  -h, --help       Show this text
  -v, --version    Print the version

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
} as const;

const COMMANDS = ['serve', 'help'] as const;

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
  const port = values.port === undefined ? undefined : parsePort(values.port);
  if (port === null) return usageError(`--port expects an integer from 0 to 65535, got "${values.port}"`);
  return {
    kind: 'serve',
    options: {
      ...(values.config === undefined ? {} : { configFile: values.config }),
      ...(port === undefined ? {} : { port }),
      ...(values.offline === true ? { offline: true } : {}),
    },
  };
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
