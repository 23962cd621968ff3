import { describe, expect, it } from 'vitest';
import { formatBytes, formatDuration, parseDuration, parseSize } from '../../src/config/units.js';

describe('parseDuration', () => {
  it.each([
    ['500ms', 500],
    ['30s', 30_000],
    ['5m', 300_000],
    ['2h', 7_200_000],
    ['7d', 604_800_000],
    ['1w', 604_800_000],
    ['1.5h', 5_400_000],
    ['0s', 0],
    ['10 s', 10_000],
  ])('reads %s as %i ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each(['', 'fast', '30', '5M', '-5s', '5 minutes', ' 5s', '5s ', '1h30m', '.5s', 's'])(
    'rejects %j with a message naming the input and the units',
    (text) => {
      expect(() => parseDuration(text)).toThrow(`invalid duration ${JSON.stringify(text)}`);
      expect(() => parseDuration(text)).toThrow(/ms, s, m, h, d, w/);
    },
  );

  it('rejects a duration too large to count exactly', () => {
    expect(() => parseDuration('99999999999999w')).toThrow(/too large/);
  });
});

describe('parseSize', () => {
  it.each([
    ['123', 123],
    ['0', 0],
    ['12B', 12],
    ['1KiB', 1024],
    ['512MiB', 512 * 2 ** 20],
    ['50GiB', 50 * 2 ** 30],
    ['2TiB', 2 * 2 ** 40],
    ['10GB', 10_000_000_000],
    ['100MB', 100_000_000],
    ['1kb', 1000],
    ['50gib', 50 * 2 ** 30],
    ['1.5KiB', 1536],
    ['50 GiB', 50 * 2 ** 30],
    // Kubernetes resource quantities: Ki, Mi, Gi, Ti, Pi are powers of 1024.
    ['50Gi', 50 * 2 ** 30],
    ['512Mi', 512 * 2 ** 20],
    ['1Ki', 1024],
    ['2Ti', 2 * 2 ** 40],
    ['1Pi', 2 ** 50],
    ['1.5gi', 1.5 * 2 ** 30],
  ])('reads %s as %i bytes', (text, bytes) => {
    expect(parseSize(text)).toBe(bytes);
  });

  it.each(['', 'lots', '10G', '10 gigabytes', '-1', '1e9', 'GiB', '5 5MB', '1.KiB', 'Gi', '5Gii', '5iB'])('rejects %j', (text) => {
    expect(() => parseSize(text)).toThrow(`invalid size ${JSON.stringify(text)}`);
  });

  it('rejects a size too large to count exactly', () => {
    expect(() => parseSize('999999PiB')).toThrow(/too large/);
  });
});

describe('formatBytes', () => {
  it.each([
    [0, '0B'],
    [512, '512B'],
    [1024, '1KiB'],
    [1536, '1.5KiB'],
    [50 * 2 ** 30, '50GiB'],
    [3 * 2 ** 50, '3PiB'],
    [-2048, '-2KiB'],
  ])('formats %i as %s', (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });

  it('writes what parseSize reads back', () => {
    for (const bytes of [1, 1024, 5 * 2 ** 20, 50 * 2 ** 30]) expect(parseSize(formatBytes(bytes))).toBe(bytes);
  });
});

describe('formatDuration', () => {
  it.each([
    [0, '0ms'],
    [250, '250ms'],
    [1500, '1.5s'],
    [300_000, '5m'],
    [5_400_000, '1.5h'],
    [30 * 86_400_000, '30d'],
  ])('formats %i ms as %s', (ms, text) => {
    expect(formatDuration(ms)).toBe(text);
  });

  it('writes what parseDuration reads back', () => {
    for (const ms of [1, 999, 30_000, 300_000, 7_200_000, 7 * 86_400_000]) expect(parseDuration(formatDuration(ms))).toBe(ms);
  });
});
