import { describe, expect, it } from 'vitest';
import { loadClientAuth } from '../../src/http/client-auth.js';

const TOKEN = 'client-token-0123456789abcdef';
const VERDICT_TTL_MS = 5 * 60_000;

/**
 * A verification in progress is one shared promise, so two calls that return the same
 * promise show that a verification is running; a kept verdict answers each call afresh.
 */
describe('client auth verdicts', () => {
  const bearer = `Bearer ${TOKEN}`;

  it('shares one verification between concurrent requests', async () => {
    const auth = await loadClientAuth({ tokens: [TOKEN], realm: 'oci-mirror' });
    const first = auth.allowsRegistry(bearer);
    expect(auth.allowsRegistry(bearer)).toBe(first);
    await expect(first).resolves.toBe(true);
    await expect(auth.allowsRegistry('Bearer wrong')).resolves.toBe(false);
  });

  it('keeps a verdict for five minutes, then verifies again', async () => {
    const clock = { t: 1_000_000 };
    const auth = await loadClientAuth({ tokens: [TOKEN], realm: 'oci-mirror' }, () => clock.t);
    await auth.allowsRegistry(bearer);
    clock.t += VERDICT_TTL_MS - 1;
    const kept = auth.allowsRegistry(bearer);
    expect(auth.allowsRegistry(bearer)).not.toBe(kept);
    await expect(kept).resolves.toBe(true);
    clock.t += 2;
    const again = auth.allowsRegistry(bearer);
    expect(auth.allowsRegistry(bearer)).toBe(again);
    await expect(again).resolves.toBe(true);
  });
});
