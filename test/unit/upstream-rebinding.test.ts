import type { LookupAddress } from 'node:dns';
import { createServer, type Server } from 'node:http';
import type { AddressInfo, LookupFunction } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import type { UpstreamConfig } from '../../src/config/types.js';
import { createMetrics } from '../../src/metrics.js';
import { lookupWithoutLocal, type Resolve } from '../../src/upstream/local-address.js';
import { createTransport } from '../../src/upstream/transport.js';
import { TEST_UPSTREAM_POLICY } from '../support/upstream-config.js';

/**
 * DNS rebinding: a redirect or realm host that resolves to a public address when
 * checked and to the metadata service or loopback when dialled. The check runs inside
 * the connect-time lookup, on the answer the socket dials, so there is no second
 * answer to disagree with it.
 */
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Answers `answers[i]` to the i-th question (the last one for ever after), counting questions. */
function rebinding(answers: readonly string[]): { resolve: Resolve; asked: string[] } {
  const asked: string[] = [];
  const resolve: Resolve = (hostname, _options, callback) => {
    asked.push(hostname);
    const address = answers[Math.min(asked.length, answers.length) - 1] ?? '';
    const addresses: LookupAddress[] = [{ address, family: address.includes(':') ? 6 : 4 }];
    queueMicrotask(() => callback(null, addresses));
  };
  return { resolve, asked };
}

function ask(lookup: LookupFunction, host: string): Promise<unknown> {
  return new Promise((done) => lookup(host, {}, (err, address) => done(err ?? address)));
}

describe('the connect-time lookup', () => {
  it('passes a public answer, and refuses the link-local answer the same name gives next', async () => {
    const { resolve, asked } = rebinding(['203.0.113.7', '169.254.169.254']);
    const lookup = lookupWithoutLocal('registry.example', resolve);
    expect(await ask(lookup, 'cdn.example')).toBe('203.0.113.7');
    expect(await ask(lookup, 'cdn.example')).toMatchObject({ code: 'ERR_LOCAL_ADDRESS' });
    expect(asked).toEqual(['cdn.example', 'cdn.example']);
  });

  it('lets the upstream its own configured host on loopback', async () => {
    const { resolve } = rebinding(['127.0.0.1']);
    expect(await ask(lookupWithoutLocal('registry.example', resolve), 'registry.example')).toBe('127.0.0.1');
  });
});

describe('a redirect target rebinding to loopback', () => {
  it('is never dialled: the one lookup per connection is the check', async () => {
    let connections = 0;
    const victim: Server = createServer((_req, res) => res.end('secret'));
    victim.on('connection', () => connections++);
    await new Promise<void>((resolve) => victim.listen(0, '127.0.0.10', resolve));
    cleanups.push(() => new Promise((resolve) => victim.close(() => resolve())));
    const { port } = victim.address() as AddressInfo;
    // Loopback on every question: a check made apart from the dial would be one more question.
    const { resolve, asked } = rebinding(['127.0.0.10']);
    const transport = createTransport(config('https://registry.example'), { metrics: createMetrics({ processMetrics: false }), resolve });
    cleanups.push(() => transport.close());
    const failure = await transport.send('GET', new URL(`http://cdn.example:${port}/blob`), {}).catch((err: unknown) => err);
    expect(failure).toMatchObject({ code: 'ERR_LOCAL_ADDRESS' });
    expect(asked).toEqual(['cdn.example']);
    expect(connections).toBe(0);
  });
});

function config(url: string): UpstreamConfig {
  return {
    name: 'test',
    url,
    ...TEST_UPSTREAM_POLICY,
    timeouts: { connectMs: 1000, headersMs: 1000, bodyMs: 1000 },
  };
}
