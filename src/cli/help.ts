/**
 * The text of `--help`: the overview, and one page per command (synopsis, options,
 * notes, an example), both generated from the option table the parser uses (args.ts),
 * so a flag cannot be parsed without being documented or documented without existing.
 */
import { OPTIONS, type CommandName, type OptionSpec } from './args.js';

interface CommandText {
  readonly synopsis: string;
  readonly summary: string;
  readonly notes?: string;
  readonly example: string;
}

const COMMAND_TEXT: Readonly<Record<CommandName, CommandText>> = {
  serve: {
    synopsis: 'oci-mirror [serve] [options]',
    summary: 'Run the mirror (the default when no command is given)',
    notes: 'Stops on SIGTERM or SIGINT after the responses in flight have finished.',
    example: 'oci-mirror serve --config /etc/oci-mirror/mirror.config.json --port 5000',
  },
  prune: {
    synopsis: 'oci-mirror prune --max-size SIZE | --older-than DUR [--apply] [options]',
    summary: 'Evict from the store now, by size and/or age (a dry run unless --apply)',
    notes: 'Safe while the mirror runs; one process evicts at a time. Pinned images (store.pins) are never pruned.',
    example: 'oci-mirror prune --max-size 40GiB --apply',
  },
  stats: {
    synopsis: 'oci-mirror stats [--url URL] [--json] [options]',
    summary: "Show the store's size, top repositories and a running mirror's hit ratio",
    notes: 'Exit status 1 when no mirror answered at URL (the store figures are printed anyway).',
    example: 'oci-mirror stats --url http://127.0.0.1:5000',
  },
  warm: {
    synopsis: 'oci-mirror warm [IMAGE...] [--file FILE] [options]',
    summary: 'Fetch images into the store ahead of their first pull',
    notes:
      'IMAGE: alpine:3.20, ghcr.io/org/app:1.2, quay.io/org/app@sha256:... Safe beside a running mirror on the\n' +
      'same store: nothing is fetched twice. Exit status 1 when any image failed; run it again to resume.',
    example: 'oci-mirror warm alpine:3.20 ghcr.io/org/app:1.2 --platform linux/amd64 --pin',
  },
  export: {
    synopsis: 'oci-mirror export [IMAGE...] [--file FILE | --all | --repository P] --output FILE [options]',
    summary: 'Write cached images to one bundle (a tar of an OCI image layout)',
    example: 'oci-mirror export --repository "docker.io/library/*" --output bundle.tar',
  },
  import: {
    synopsis: 'oci-mirror import FILE [options]',
    summary: 'Load a bundle (or any oci-archive) into the store',
    notes: 'Verifies every blob, then files each image under the registry, repository and tag it came from (- reads stdin).',
    example: 'oci-mirror import bundle.tar --config /etc/oci-mirror/mirror.config.json',
  },
};

const EXIT_STATUS = `Exit status:
  0  done
  1  failed while running (an image not warmed, exported or imported; no mirror answered stats)
  2  bad usage or configuration
  3  the environment refused to start: address in use, no such host, permission denied,
     read-only or missing store, missing file (one line names the cause and the config key)
`;

const CONFIGURATION = `Configuration:
  With --config FILE, FILE is read. Otherwise ./mirror.config.json is read if it
  exists in the working directory, and the built-in defaults are used if it does not.
  A file is merged onto the defaults section by section; "upstreams", when given,
  replaces the default upstream set. Passwords come from environment variables
  named by "passwordEnv", never from the file.
`;

const COLUMN = 20;
const WIDTH = 100;

/** Used by `--help` and the `help` command, and after every usage error. */
export const USAGE = [
  'Usage: oci-mirror [command] [options]\n\nA pull-through caching mirror for OCI and Docker container registries.\n',
  `Commands:\n${[...Object.entries(COMMAND_TEXT), ['help', { summary: 'Show this text' }] as const].map(([name, text]) => row(name, text.summary)).join('')}`,
  `Options:\n${optionRows((spec) => spec.commands === undefined)}`,
  `Run "oci-mirror COMMAND --help" for the options of one command.\n`,
  CONFIGURATION,
  EXIT_STATUS,
  `Example:\n  ${COMMAND_TEXT.serve.example}\n`,
].join('\n');

/** One command's page: synopsis, summary, its options, the global ones, notes, an example. */
export function commandHelp(name: CommandName): string {
  const text = COMMAND_TEXT[name];
  const own = optionRows((spec) => spec.commands?.includes(name) === true);
  return [
    `Usage: ${text.synopsis}\n\n${text.summary}.\n`,
    ...(own ? [`Options:\n${own}`] : []),
    `Options of every command:\n${optionRows((spec) => spec.commands === undefined)}`,
    ...(text.notes ? [`${text.notes}\n`] : []),
    EXIT_STATUS,
    `Example:\n  ${text.example}\n`,
  ].join('\n');
}

function optionRows(include: (spec: OptionSpec) => boolean): string {
  return (Object.entries(OPTIONS) as [string, OptionSpec][])
    .filter(([, spec]) => include(spec))
    .map(([name, spec]) => row(`${spec.short ? `-${spec.short}, ` : ''}--${name}${spec.value ? ` ${spec.value}` : ''}`, spec.help))
    .join('');
}

/** `  term   text`, the text wrapped at WIDTH and indented under itself. */
function row(term: string, text: string): string {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line && COLUMN + 2 + line.length + 1 + word.length > WIDTH) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  lines.push(line);
  const head = `  ${term}`;
  const first = head.length < COLUMN + 2 ? head.padEnd(COLUMN + 2) + lines[0] : `${head}\n${' '.repeat(COLUMN + 2)}${lines[0]}`;
  return `${[first, ...lines.slice(1).map((l) => ' '.repeat(COLUMN + 2) + l)].join('\n')}\n`;
}
