#!/usr/bin/env node
/**
 * The `oci-mirror` bin: argv → command → run. The only module that calls
 * `process.exit`. Exit codes: 0 done, 1 unexpected failure, 2 bad usage or config.
 */
import { existsSync } from 'node:fs';
import { runServe } from './cli/serve.js';
import { runPrune } from './cli/prune.js';
import { collectStats, formatStats } from './cli/stats.js';
import { runExport, runImport } from './cli/bundle.js';
import { progressMode } from './cli/progress.js';
import { runWarm } from './cli/warm.js';
import { parseCommandLine, USAGE, type GlobalOptions } from './cli/args.js';
import { packageVersion } from './version.js';
import { ConfigError, loadConfig, type LoadConfigOptions } from './config.js';

/** Read when `--config` is not given, if it exists in the working directory. */
const DEFAULT_CONFIG_PATH = 'mirror.config.json';
const EXIT_OK = 0;
const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

async function main(argv: readonly string[]): Promise<number> {
  const command = parseCommandLine(argv);
  switch (command.kind) {
    case 'help':
      process.stdout.write(USAGE);
      return EXIT_OK;
    case 'version':
      process.stdout.write(`${packageVersion()}\n`);
      return EXIT_OK;
    case 'usage-error':
      process.stderr.write(`oci-mirror: ${command.message}\n\n${USAGE}`);
      return EXIT_USAGE;
    case 'serve':
      await runServe(await loadConfig(configOptions(command.options)), command.workers);
      return EXIT_OK;
    case 'prune': {
      const config = await loadConfig(configOptions(command.options));
      await runPrune(config, command, (line) => process.stdout.write(`${line}\n`));
      return EXIT_OK;
    }
    case 'stats': {
      const config = await loadConfig(configOptions(command.options));
      const stats = await collectStats(config, command.url ?? `http://127.0.0.1:${config.listen.port}`);
      process.stdout.write(command.json ? `${JSON.stringify(stats, null, 2)}\n` : `${formatStats(stats).join('\n')}\n`);
      return EXIT_OK;
    }
    case 'warm': {
      const config = await loadConfig(configOptions(command.options));
      const failed = await runWarm(config, command.request, progressMode(command.json, process.stdout.isTTY), process.stdout);
      return failed > 0 ? EXIT_FAILURE : EXIT_OK;
    }
    case 'export': {
      const config = await loadConfig(configOptions(command.options));
      // With the bundle on stdout, progress goes to stderr.
      const toStdout = command.request.output === '-';
      const out = toStdout ? process.stderr : process.stdout;
      const mode = progressMode(command.json, out.isTTY);
      const failed = await runExport(config, command.request, mode, out, process.stdout);
      return failed > 0 ? EXIT_FAILURE : EXIT_OK;
    }
    case 'import': {
      const config = await loadConfig(configOptions(command.options));
      const failed = await runImport(config, command.file, progressMode(command.json, process.stdout.isTTY), process.stdout, process.stdin);
      return failed > 0 ? EXIT_FAILURE : EXIT_OK;
    }
  }
}

function configOptions(options: GlobalOptions): LoadConfigOptions {
  const file = options.configFile ?? (existsSync(DEFAULT_CONFIG_PATH) ? DEFAULT_CONFIG_PATH : undefined);
  return {
    ...(file === undefined ? {} : { file }),
    env: process.env,
    overrides: {
      ...(options.port === undefined ? {} : { port: options.port }),
      ...(options.offline === undefined ? {} : { offline: options.offline }),
    },
  };
}

function reportFailure(err: unknown): number {
  if (err instanceof ConfigError) {
    process.stderr.write(`oci-mirror: ${err.message}\n`);
    return EXIT_USAGE;
  }
  process.stderr.write(`oci-mirror: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  return EXIT_FAILURE;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => process.exit(reportFailure(err)),
);
