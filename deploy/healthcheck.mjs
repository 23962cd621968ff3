#!/usr/bin/env node
// @ts-check
/**
 * The image's HEALTHCHECK: asks the running mirror's /readyz on the address and scheme
 * its configuration gives, so a changed listen.port (or listen.tls) needs no change
 * here. It reads the configuration the mirror read: the `--config FILE` and `--port N`
 * of the mirror's command line (/proc/<pid>/cmdline of PID 1, or of the pid given as the
 * first argument; an init such as `docker run --init` keeps the command in its own), else
 * mirror.config.json in the mirror's working directory, else the defaults (port 5000).
 * A wildcard listen host is probed on loopback. TLS certificates are not checked: the
 * probe asks whether this process answers, not whom to trust.
 * Exit status 0 when /readyz answers 200 (ready, or degraded but serving), 1 otherwise.
 */
import { existsSync, readFileSync, readlinkSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { resolve } from 'node:path';

const DEFAULT_PORT = 5000;
const TIMEOUT_MS = 2500;

/** The mirror's arguments after its script (…/main.js or the oci-mirror bin), and its working directory. */
function mirrorProcess(pid) {
  const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8')
    .split('\0')
    .filter((a) => a !== '');
  const script = argv.findIndex((a) => a.endsWith('main.js') || a.endsWith('/oci-mirror') || a === 'oci-mirror');
  let cwd;
  try {
    cwd = readlinkSync(`/proc/${pid}/cwd`);
  } catch (err) {
    // Another user's process: the image runs both as one user, so only a test sees this.
    if (/** @type {NodeJS.ErrnoException} */ (err).code !== 'EACCES') throw err;
    cwd = process.cwd();
  }
  return { args: script === -1 ? [] : argv.slice(script + 1), cwd };
}

/** The value of `--name VALUE` or `--name=VALUE`, if given. */
function flag(args, name) {
  for (const [i, arg] of args.entries()) {
    if (arg === `--${name}`) return args[i + 1];
    if (arg.startsWith(`--${name}=`)) return arg.slice(name.length + 3);
  }
  return undefined;
}

function listenAddress(args, cwd) {
  const named = flag(args, 'config');
  const file = named === undefined ? resolve(cwd, 'mirror.config.json') : resolve(cwd, named);
  const config = named !== undefined || existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')) : {};
  const listen = config.listen ?? {};
  const port = Number(flag(args, 'port') ?? listen.port ?? DEFAULT_PORT);
  const host = listen.host === undefined || ['0.0.0.0', '::', ''].includes(listen.host) ? '127.0.0.1' : listen.host;
  return { host, port, tls: listen.tls !== undefined };
}

function probe({ host, port, tls }) {
  const send = tls ? httpsRequest : httpRequest;
  return new Promise((done) => {
    const req = send({ host, port, path: '/readyz', timeout: TIMEOUT_MS, rejectUnauthorized: false }, (res) => {
      res.resume();
      done(res.statusCode === 200);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${TIMEOUT_MS} ms`)));
    req.on('error', (err) => {
      process.stderr.write(`healthcheck: ${host}:${port}: ${err.message}\n`);
      done(false);
    });
    req.end();
  });
}

const { args, cwd } = mirrorProcess(process.argv[2] ?? '1');
const address = listenAddress(args, cwd);
const ready = await probe(address);
process.stdout.write(
  `healthcheck: ${address.tls ? 'https' : 'http'}://${address.host}:${address.port}/readyz ${ready ? 'ready' : 'not ready'}\n`,
);
process.exit(ready ? 0 : 1);
