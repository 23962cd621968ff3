import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import bcrypt from 'bcryptjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadClientAuth, type ClientAuthOptions } from '../../src/http/client-auth.js';
import { FAILURE_WINDOW_MS } from '../../src/http/auth-throttle.js';
import { createPasswordPool } from '../../src/http/password-pool.js';

const TOKEN = 'client-token-0123456789abcdef';
const PASSWORD = 'alice-Pa55word';
const SUCCESS_TTL_MS = 5 * 60_000;
const FAILURE_LIMIT = 4;
const basic = (user: string, password: string): string => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

/** A comparison that records each call (the hash it was given) and answers as bcrypt would. */
function countingCompare(): { calls: string[]; compare: NonNullable<ClientAuthOptions['compare']> } {
  const calls: string[] = [];
  return { calls, compare: (password, hash) => (calls.push(hash), Promise.resolve(bcrypt.compareSync(password, hash))) };
}

describe('client auth verdicts', () => {
  let dir: string;
  let htpasswdFile: string;
  const aliceHash = bcrypt.hashSync(PASSWORD, 4).replace(/^\$2b\$/, '$2y$');

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'oci-mirror-client-auth-unit-'));
    htpasswdFile = join(dir, 'htpasswd');
    await writeFile(htpasswdFile, `alice:${aliceHash}\n`);
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('shares one comparison between concurrent checks of one credential', async () => {
    const counted = countingCompare();
    const auth = await loadClientAuth(
      { htpasswdFile, tokens: [], realm: 'oci-mirror', failedLoginsPerMinute: FAILURE_LIMIT },
      { compare: counted.compare },
    );
    const verdicts = await Promise.all([1, 2, 3].map(() => auth.allowsRegistry(basic('alice', PASSWORD), '10.0.0.1')));
    expect(verdicts).toEqual([{ ok: true }, { ok: true }, { ok: true }]);
    expect(counted.calls).toEqual([aliceHash]);
  });

  it('keeps a success for five minutes, then verifies again', async () => {
    const clock = { t: 1_000_000 };
    const counted = countingCompare();
    const auth = await loadClientAuth(
      { htpasswdFile, tokens: [], realm: 'oci-mirror', failedLoginsPerMinute: FAILURE_LIMIT },
      { compare: counted.compare, now: () => clock.t },
    );
    await expect(auth.allowsRegistry(basic('alice', PASSWORD), '10.0.0.1')).resolves.toEqual({ ok: true });
    clock.t += SUCCESS_TTL_MS - 1;
    await expect(auth.allowsRegistry(basic('alice', PASSWORD), '10.0.0.1')).resolves.toEqual({ ok: true });
    expect(counted.calls).toHaveLength(1);
    clock.t += 2;
    await expect(auth.allowsRegistry(basic('alice', PASSWORD), '10.0.0.1')).resolves.toEqual({ ok: true });
    expect(counted.calls).toHaveLength(2);
  });

  it('keeps no failure: the same wrong password is compared each time', async () => {
    const counted = countingCompare();
    const auth = await loadClientAuth(
      { htpasswdFile, tokens: [], realm: 'oci-mirror', failedLoginsPerMinute: FAILURE_LIMIT },
      { compare: counted.compare },
    );
    for (let i = 0; i < 3; i += 1) {
      await expect(auth.allowsRegistry(basic('alice', 'wrong'), '10.0.0.1')).resolves.toEqual({ ok: false, reason: 'bad_password' });
    }
    expect(counted.calls).toEqual([aliceHash, aliceHash, aliceHash]);
  });

  it('compares an unknown user against a dummy hash of the same cost', async () => {
    const counted = countingCompare();
    const auth = await loadClientAuth(
      { htpasswdFile, tokens: [], realm: 'oci-mirror', failedLoginsPerMinute: FAILURE_LIMIT },
      { compare: counted.compare },
    );
    await expect(auth.allowsRegistry(basic('mallory', PASSWORD), '10.0.0.1')).resolves.toEqual({ ok: false, reason: 'unknown_user' });
    expect(counted.calls).toHaveLength(1);
    const [dummy = ''] = counted.calls;
    expect(dummy).not.toBe(aliceHash);
    expect(dummy.split('$')[2]).toBe(aliceHash.split('$')[2]);
  });

  it('tells malformed credentials apart and costs them no comparison', async () => {
    const counted = countingCompare();
    const auth = await loadClientAuth(
      { htpasswdFile, tokens: [TOKEN], realm: 'oci-mirror', failedLoginsPerMinute: FAILURE_LIMIT },
      { compare: counted.compare },
    );
    await expect(auth.allowsRegistry('Digest abc', '10.0.0.1')).resolves.toEqual({ ok: false, reason: 'malformed' });
    await expect(auth.allowsRegistry(`Basic ${Buffer.from('no-colon').toString('base64')}`, '10.0.0.2')).resolves.toMatchObject({
      reason: 'malformed',
    });
    await expect(auth.allowsRegistry(undefined, '10.0.0.1')).resolves.toEqual({ ok: false, reason: 'anonymous' });
    await expect(auth.allowsRegistry(`Bearer ${TOKEN}`, '10.0.0.1')).resolves.toEqual({ ok: true });
    await expect(auth.allowsRegistry(basic('anyone', TOKEN), '10.0.0.1')).resolves.toEqual({ ok: true });
    expect(counted.calls).toHaveLength(0);
  });

  it('throttles an address past the failure limit before any comparison, until its window ends', async () => {
    const clock = { t: 1_000_000 };
    const counted = countingCompare();
    const auth = await loadClientAuth(
      { htpasswdFile, tokens: [], realm: 'oci-mirror', failedLoginsPerMinute: FAILURE_LIMIT },
      { compare: counted.compare, now: () => clock.t },
    );
    for (let i = 0; i < FAILURE_LIMIT; i += 1) {
      await expect(auth.allowsRegistry(basic('alice', `guess-${i}`), '10.0.0.9')).resolves.toMatchObject({ reason: 'bad_password' });
    }
    expect(counted.calls).toHaveLength(FAILURE_LIMIT);
    const throttled = await auth.allowsRegistry(basic('alice', PASSWORD), '10.0.0.9');
    expect(throttled).toEqual({ ok: false, reason: 'throttled', retryAfterSeconds: FAILURE_WINDOW_MS / 1000 });
    expect(counted.calls).toHaveLength(FAILURE_LIMIT);
    // Another address is not held back by this one's failures.
    await expect(auth.allowsRegistry(basic('alice', PASSWORD), '10.0.0.10')).resolves.toEqual({ ok: true });
    clock.t += FAILURE_WINDOW_MS;
    await expect(auth.allowsRegistry(basic('alice', 'guess-again'), '10.0.0.9')).resolves.toMatchObject({ reason: 'bad_password' });
  });
});

describe('client auth throttling of a burst', () => {
  it('counts checks in progress against the limit, so a burst from one address costs at most the limit', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'oci-mirror-client-auth-burst-'));
    try {
      const htpasswdFile = join(dir, 'htpasswd');
      await writeFile(htpasswdFile, `alice:${bcrypt.hashSync(PASSWORD, 4)}\n`);
      const counted = countingCompare();
      const auth = await loadClientAuth(
        { htpasswdFile, tokens: [], realm: 'oci-mirror', failedLoginsPerMinute: 4 },
        { compare: counted.compare },
      );
      const verdicts = await Promise.all(
        Array.from({ length: 10 }, (_, i) => auth.allowsRegistry(basic('alice', `burst-${i}`), '10.0.0.7')),
      );
      expect(verdicts.filter((v) => !v.ok && v.reason === 'bad_password')).toHaveLength(4);
      expect(verdicts.filter((v) => !v.ok && v.reason === 'throttled')).toHaveLength(6);
      expect(counted.calls).toHaveLength(4);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('password pool', () => {
  it('compares on worker threads with bcrypt', async () => {
    const pool = createPasswordPool(2);
    const hash = bcrypt.hashSync(PASSWORD, 4);
    try {
      await expect(Promise.all([pool.compare(PASSWORD, hash), pool.compare('wrong', hash), pool.compare(PASSWORD, hash)])).resolves.toEqual(
        [true, false, true],
      );
    } finally {
      await pool.close();
    }
    await expect(pool.compare(PASSWORD, hash)).rejects.toThrow('closed');
  });
});
