import { describe, expect, it } from 'vitest';
import { COMMANDS, OPTIONS, parseCommandLine, type CommandName, type OptionSpec } from '../../src/cli/args.js';
import { commandHelp, USAGE } from '../../src/cli/help.js';

describe('parseCommandLine', () => {
  it('serves by default', () => {
    expect(parseCommandLine([])).toEqual({ kind: 'serve', options: {} });
    expect(parseCommandLine(['serve'])).toEqual({ kind: 'serve', options: {} });
  });

  it('reads the global flags, in either position and either form', () => {
    expect(parseCommandLine(['serve', '--config', 'my.json', '--port', '6000', '--offline'])).toEqual({
      kind: 'serve',
      options: { configFile: 'my.json', port: 6000, offline: true },
    });
    expect(parseCommandLine(['--port=0', 'serve', '--config=/etc/m.json'])).toEqual({
      kind: 'serve',
      options: { configFile: '/etc/m.json', port: 0 },
    });
  });

  it.each([[['--help']], [['-h']], [['help']], [['help', '--help']], [['--port', '1', '-h']]])('asks for help with %j', (argv) => {
    expect(parseCommandLine(argv)).toEqual({ kind: 'help' });
  });

  it.each([
    [['serve', '--help'], 'serve'],
    [['warm', 'alpine', '-h'], 'warm'],
    [['--help', 'export'], 'export'],
    [['prune', '--help'], 'prune'],
  ])("asks for one command's help with %j", (argv, command) => {
    expect(parseCommandLine(argv)).toEqual({ kind: 'help', command });
  });

  it.each([[['--version']], [['-v']], [['serve', '-v']]])('asks for the version with %j', (argv) => {
    expect(parseCommandLine(argv)).toEqual({ kind: 'version' });
  });

  it.each([
    [['mirror'], 'unknown command "mirror"'],
    [['warm', '--platform', 'amd64'], '--platform expects os/architecture[/variant]'],
    [['warm', '--concurrency', '0'], '--concurrency expects an integer from 1 to 256'],
    [['export', 'alpine'], 'export needs --output FILE'],
    [['import'], 'import takes one bundle file'],
    [['import', 'a.tar', 'b.tar'], 'import takes one bundle file'],
    [['serve', '--all'], '--all belongs to the export command'],
    [['prune', '--max-size', '1', '--json'], '--json belongs to the stats, warm, export, import commands'],
    [['serve', 'extra'], 'unexpected argument "extra"'],
    [['help', 'serve'], 'unexpected argument "serve"'],
    [['--verbose'], "Unknown option '--verbose'"],
    [['-x'], "Unknown option '-x'"],
    [['--offline=yes'], "Option '--offline' does not take an argument"],
    [['--port'], "Option '--port <value>' argument missing"],
    [['--config'], "Option '--config <value>' argument missing"],
    [['--port', 'http'], '--port expects an integer from 0 to 65535, got "http"'],
    [['--port', '65536'], '--port expects an integer from 0 to 65535, got "65536"'],
    [['--port', '-1'], "Option '--port' argument is ambiguous"],
    [['--port', '1.5'], '--port expects an integer from 0 to 65535, got "1.5"'],
  ])('rejects %j as a usage error', (argv, message) => {
    const command = parseCommandLine(argv);
    expect(command.kind).toBe('usage-error');
    expect(command.kind === 'usage-error' && command.message).toContain(message);
  });

  it('keeps the advice node appends to unknown options out of the message', () => {
    expect(parseCommandLine(['--nope'])).toEqual({ kind: 'usage-error', message: "Unknown option '--nope'" });
  });
});

describe('USAGE', () => {
  it('lists the commands that exist, every flag, the config lookup rule and an example', () => {
    for (const text of ['serve', 'help', '--config FILE', '--port N', '--offline', '-h, --help', '-v, --version']) {
      expect(USAGE).toContain(text);
    }
    expect(USAGE).toContain('./mirror.config.json');
    expect(USAGE).toMatch(/defaults/);
    expect(USAGE).toMatch(/Example:\n {2}oci-mirror serve/);
  });

  it('parses warm, export and import with their images, files and options', () => {
    expect(parseCommandLine(['warm', 'alpine:3.20', 'ghcr.io/org/app:1', '--platform', 'linux/amd64,linux/arm64/v8', '--pin'])).toEqual({
      kind: 'warm',
      options: {},
      json: false,
      request: {
        refs: ['alpine:3.20', 'ghcr.io/org/app:1'],
        platforms: [
          { os: 'linux', architecture: 'amd64' },
          { os: 'linux', architecture: 'arm64', variant: 'v8' },
        ],
        concurrency: 4,
        pin: true,
      },
    });
    expect(parseCommandLine(['export', '--repository', 'docker.io/library/*', '-o', 'b.tar', '--json'])).toEqual({
      kind: 'export',
      options: {},
      json: true,
      request: { refs: [], all: false, repository: 'docker.io/library/*', output: 'b.tar' },
    });
    expect(parseCommandLine(['import', 'b.tar', '--config', 'm.json'])).toEqual({
      kind: 'import',
      options: { configFile: 'm.json' },
      file: 'b.tar',
      json: false,
    });
  });

  it('parses serve --workers, prune and stats with their own options', () => {
    expect(parseCommandLine(['serve', '--workers', '4'])).toEqual({ kind: 'serve', options: {}, workers: 4 });
    expect(parseCommandLine(['prune', '--max-size', '1GiB', '--older-than', '7d', '--config', 'm.json'])).toEqual({
      kind: 'prune',
      options: { configFile: 'm.json' },
      targetBytes: 2 ** 30,
      olderThanMs: 7 * 86_400_000,
      apply: false,
    });
    expect(parseCommandLine(['prune', '--older-than', '1h', '--apply'])).toMatchObject({ kind: 'prune', apply: true });
    expect(parseCommandLine(['prune', '--max-size', '50Gi'])).toMatchObject({ kind: 'prune', targetBytes: 50 * 2 ** 30 });
    expect(parseCommandLine(['stats', '--json', '--url', 'http://127.0.0.1:5000'])).toEqual({
      kind: 'stats',
      options: {},
      url: 'http://127.0.0.1:5000',
      json: true,
    });
  });

  it.each([
    [['serve', '--workers', '0'], '--workers expects an integer from 1 to 256'],
    [['serve', '--workers', 'many'], '--workers expects an integer from 1 to 256'],
    [['prune'], 'prune needs --max-size SIZE and/or --older-than DURATION'],
    [['prune', '--max-size', 'lots'], 'invalid size "lots"'],
    [['prune', '--older-than', '3 weeks'], 'invalid duration "3 weeks"'],
    [['serve', '--apply'], '--apply belongs to the prune command'],
    [['stats', '--workers', '2'], '--workers belongs to the serve command'],
  ])('rejects %j with a usage error', (argv, message) => {
    const command = parseCommandLine(argv);
    expect(command.kind).toBe('usage-error');
    expect(command.kind === 'usage-error' && command.message).toContain(message);
  });

  it('lists no command that does not exist yet', () => {
    const commands = /Commands:\n((?: {2}\S.*\n)+)/.exec(USAGE)?.[1] ?? '';
    expect(
      commands
        .split('\n')
        .filter(Boolean)
        .map((line) => line.trim().split(/\s+/)[0]),
    ).toEqual(['serve', 'prune', 'stats', 'warm', 'export', 'import', 'help']);
  });
});

describe('commandHelp', () => {
  const commands = COMMANDS.filter((c): c is CommandName => c !== 'help');
  const options = Object.entries(OPTIONS) as [string, OptionSpec][];

  it.each(commands)('documents exactly the options %s accepts, with a synopsis, exit codes and an example', (command) => {
    const page = commandHelp(command);
    expect(page).toMatch(new RegExp(`^Usage: oci-mirror \\[?${command}`));
    expect(page).toMatch(new RegExp(`\nExample:\n {2}oci-mirror ${command} `));
    expect(page).toMatch(/Exit status:\n {2}0 .*\n {2}1 .*\n {2}2 .*\n {2}3 /);
    for (const [name, spec] of options) {
      const listed = new RegExp(`^ {2}(-\\w, )?--${name}\\b`, 'm').test(page);
      const accepted = spec.commands === undefined || spec.commands.includes(command);
      expect(listed, `--${name} in ${command} --help`).toBe(accepted);
      // What the page lists, the parser takes (and what it does not, the parser refuses).
      const argv = [command, `--${name}`, ...(spec.type === 'string' ? ['x'] : [])];
      const parsed = parseCommandLine(argv);
      const refused = parsed.kind === 'usage-error' && parsed.message.includes('belongs to');
      expect(refused, argv.join(' ')).toBe(!accepted);
    }
  });

  it('keeps the overview to the commands and the options every command takes', () => {
    for (const [name, spec] of options) {
      expect(new RegExp(`^ {2}(-\\w, )?--${name}\\b`, 'm').test(USAGE), name).toBe(spec.commands === undefined);
    }
  });
});
