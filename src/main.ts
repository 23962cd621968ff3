#!/usr/bin/env node
/**
 * The `oci-mirror` bin: argv → command → run. The only module that calls
 * `process.exit`. Exit codes (cli/startup-errors.ts): 0 done, 1 failed while running,
 * 2 bad usage or config, 3 the environment refused to start (one line names the cause
 * and the config key).
 */
import { existsSync } from 'node:fs';
import { runServe } from './cli/serve.js';
import { runPrune } from './cli/prune.js';
import { collectStats, formatStats } from './cli/stats.js';
import { runExport, runImport } from './cli/bundle.js';
import { progressMode } from './cli/progress.js';
import { runWarm } from './cli/warm.js';
import { parseCommandLine, type GlobalOptions } from './cli/args.js';
import { commandHelp, USAGE } from './cli/help.js';
import { VERSION } from './version.js';
import { StoreRefusedError } from './store/store-marker.js';
import { EXIT_ENVIRONMENT, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, checkReadableFile, StartupError } from './cli/startup-errors.js';
import { ConfigError, loadConfig, type LoadConfigOptions } from './config/index.js';

/** Read when `--config` is not given, if it exists in the working directory. */
const DEFAULT_CONFIG_PATH = 'mirror.config.json';

async function main(argv: readonly string[]): Promise<number> {
  const command = parseCommandLine(argv);
  switch (command.kind) {
    case 'help':
      process.stdout.write(command.command ? commandHelp(command.command) : USAGE);
      return EXIT_OK;
    case 'version':
      process.stdout.write(`${VERSION}\n`);
      return EXIT_OK;
    case 'usage-error':
      process.stderr.write(`oci-mirror: ${command.message}\n\n${USAGE}`);
      return EXIT_USAGE;
    case 'serve':
      return runServe(await loadConfig(configOptions(command.options)), command.workers);
    case 'prune': {
      const config = await loadConfig(configOptions(command.options));
      await runPrune(config, command, (line) => process.stdout.write(`${line}\n`));
      return EXIT_OK;
    }
    case 'stats': {
      const config = await loadConfig(configOptions(command.options));
      const stats = await collectStats(config, command.url ?? `http://127.0.0.1:${config.listen.port}`);
      process.stdout.write(command.json ? `${JSON.stringify(stats, null, 2)}\n` : `${formatStats(stats).join('\n')}\n`);
      return stats.mirror.error === undefined ? EXIT_OK : EXIT_FAILURE;
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
      const mode = progressMode(command.json, process.stdout.isTTY);
      if (command.file !== '-') await checkReadableFile('import FILE', command.file);
      const failed = await runImport(config, command.file, mode, process.stdout, process.stdin);
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
  if (err instanceof ConfigError || err instanceof StoreRefusedError) {
    process.stderr.write(`oci-mirror: ${err.message}\n`);
    return EXIT_USAGE;
  }
  if (err instanceof StartupError) {
    process.stderr.write(`oci-mirror: ${err.message}\n`);
    return EXIT_ENVIRONMENT;
  }
  process.stderr.write(`oci-mirror: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  return EXIT_FAILURE;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => process.exit(reportFailure(err)),
);
