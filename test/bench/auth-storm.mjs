// @ts-check
/**
 * Wrong-password storm against client authentication (issue: "bcrypt on the event loop").
 * A benchmark, never a timed test. The built mirror runs as a child process with an
 * htpasswd file (bcrypt cost 10, as `htpasswd -B -C 10`) in front of a local upstream
 * serving one manifest; an authorised client pulls that manifest in a loop for
 * `--seconds`, first alone, then while `--rate` wrong passwords a second are sent:
 *   spread   each guess from its own loopback address (127.0.0.2…), so none is throttled
 *            and every one costs a bcrypt comparison: the cost of the comparisons themselves
 *   single   every guess from 127.0.0.1 itself: the address is throttled after its limit
 * and prints the authorised client's p50/p99/max latency in each phase.
 *
 *   npm run bench:auth [-- --seconds 10 --rate 40 --dist dist]
 */
import { createServer, request } from 'node:http';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import bcrypt from 'bcryptjs';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string', default: '10' },
    rate: { type: 'string', default: '40' },
    dist: { type: 'string', default: 'dist' },
    port: { type: 'string', default: '5391' },
  },
});
const SECONDS = Number(values.seconds);
const RATE = Number(values.rate);
const PORT = Number(values.port);
const PASSWORD = 'bench-Pa55word';
const MANIFEST = Buffer.from(
  JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: {}, layers: [] }),
);
const DIGEST = `sha256:${createHash('sha256').update(MANIFEST).digest('hex')}`;
const basic = (/** @type {string} */ user, /** @type {string} */ password) =>
  `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

/** @returns {Promise<import('node:http').Server>} */
async function startUpstream() {
  const server = createServer((req, res) => {
    if (req.url?.startsWith('/v2/bench/app/manifests/')) {
      res.writeHead(200, {
        'content-type': 'application/vnd.oci.image.manifest.v1+json',
        'docker-content-digest': DIGEST,
        'content-length': MANIFEST.length,
      });
      res.end(req.method === 'HEAD' ? undefined : MANIFEST);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(undefined)));
  return server;
}

/**
 * One GET; resolves with its status and time in ms.
 * @param {string} path @param {string} authorization @param {{ localAddress?: string, agent?: import('node:http').Agent | false }} via
 * @returns {Promise<{ status: number, ms: number }>}
 */
function get(path, authorization, via) {
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port: PORT, path, headers: { authorization, accept: 'application/vnd.oci.image.manifest.v1+json' }, ...via },
      (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: Number(process.hrtime.bigint() - started) / 1e6 }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

/** @param {number[]} sorted @param {number} p */
const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;

/**
 * The authorised client's manifest GETs, one after another, for SECONDS; with a storm
 * of wrong passwords beside it when `storm` names where they come from.
 * @param {'none' | 'spread' | 'single'} storm
 */
async function phase(storm) {
  const agent = new (await import('node:http')).Agent({ keepAlive: true, maxSockets: 1 });
  const alice = basic('alice', PASSWORD);
  const end = Date.now() + SECONDS * 1000;
  /** @type {number[]} */
  const times = [];
  /** @type {Record<number, number>} */
  const guesses = {};
  /** @type {Promise<unknown>[]} */
  const pending = [];
  let sent = 0;
  const timer =
    storm === 'none'
      ? undefined
      : setInterval(() => {
          for (let i = 0; i < RATE; i++) {
            const localAddress = storm === 'spread' ? `127.0.${Math.floor((i + 2) / 250)}.${((i + 2) % 250) + 2}` : '127.0.0.1';
            const guess = get('/v2/bench/app/manifests/v1', basic('alice', `guess-${storm}-${sent++}`), {
              localAddress,
              agent: false,
            }).then(
              (r) => (guesses[r.status] = (guesses[r.status] ?? 0) + 1),
              () => (guesses[0] = (guesses[0] ?? 0) + 1),
            );
            pending.push(guess);
          }
        }, 1000);
  while (Date.now() < end) {
    const { status, ms } = await get('/v2/bench/app/manifests/v1', alice, { agent });
    if (status !== 200) throw new Error(`authorised GET answered ${status}`);
    times.push(ms);
  }
  clearInterval(timer);
  await Promise.all(pending);
  agent.destroy();
  times.sort((a, b) => a - b);
  return { storm, requests: times.length, p50: pct(times, 50), p99: pct(times, 99), max: times.at(-1) ?? NaN, guesses };
}

async function main() {
  const dir = await mkdtemp(join(tmpdir(), 'oci-mirror-auth-bench-'));
  const upstream = await startUpstream();
  const address = upstream.address();
  const upstreamPort = typeof address === 'object' && address ? address.port : 0;
  await writeFile(join(dir, 'htpasswd'), `alice:${bcrypt.hashSync(PASSWORD, 10)}\n`);
  await writeFile(
    join(dir, 'mirror.config.json'),
    JSON.stringify({
      listen: { host: '127.0.0.1', port: PORT },
      store: { path: join(dir, 'store') },
      log: { level: 'info' },
      defaultUpstream: 'bench.test',
      upstreams: { 'bench.test': { url: `http://127.0.0.1:${upstreamPort}` } },
      clientAuth: { htpasswdFile: join(dir, 'htpasswd') },
    }),
  );
  const child = spawn(process.execPath, [join(values.dist, 'main.js'), 'serve', '--config', join(dir, 'mirror.config.json')], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  // A bench stopped early (Ctrl-C, a timeout) takes its mirror with it.
  process.once('exit', () => child.kill('SIGKILL'));
  try {
    await new Promise((resolve, reject) => {
      child.stdout.on('data', (/** @type {Buffer} */ chunk) => chunk.toString().includes('mirror listening') && resolve(undefined));
      child.once('exit', () => reject(new Error('mirror exited')));
    });
    await get('/v2/bench/app/manifests/v1', basic('alice', PASSWORD), { agent: false }); // fills the cache
    console.log(`mirror ${values.dist}; ${RATE} wrong passwords a second for ${SECONDS} s; authorised manifest GETs, ms:`);
    for (const storm of /** @type {const} */ (['none', 'spread', 'single'])) {
      const r = await phase(storm);
      const fmt = (/** @type {number} */ n) => n.toFixed(1).padStart(7);
      console.log(
        `  storm ${r.storm.padEnd(6)} n=${String(r.requests).padStart(6)}  p50 ${fmt(r.p50)}  p99 ${fmt(r.p99)}  max ${fmt(r.max)}  guesses by status ${JSON.stringify(r.guesses)}`,
      );
    }
  } finally {
    child.kill('SIGTERM');
    upstream.close();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
