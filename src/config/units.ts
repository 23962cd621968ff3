/**
 * Human units of the config file: durations (`"30s"`, `"5m"`, `"7d"`) and sizes
 * (`"50GiB"`, `"50Gi"`, `"100MB"`, `"123"`). Code works in milliseconds and bytes; these
 * functions are the only place that converts.
 */

const SECOND_MS = 1000;
const MINUTE_MS = 60 * SECOND_MS;
const HOUR_MS = 60 * MINUTE_MS;
const DAY_MS = 24 * HOUR_MS;
const WEEK_MS = 7 * DAY_MS;

/** Duration units. Case-sensitive on purpose: `"5M"` could be read as months. */
const DURATION_UNITS_MS: Readonly<Record<string, number>> = {
  ms: 1,
  s: SECOND_MS,
  m: MINUTE_MS,
  h: HOUR_MS,
  d: DAY_MS,
  w: WEEK_MS,
};

/**
 * Size units, matched case-insensitively. `KB` is 1000 bytes, `KiB` 1024 (IEC 80000-13);
 * `Ki` is Kubernetes' spelling of `KiB` (resource quantities), so a value copied from a
 * PersistentVolumeClaim (`"50Gi"`) means the same here.
 */
const SIZE_UNITS_BYTES: Readonly<Record<string, number>> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  pb: 1e15,
  kib: 2 ** 10,
  mib: 2 ** 20,
  gib: 2 ** 30,
  tib: 2 ** 40,
  pib: 2 ** 50,
  ki: 2 ** 10,
  mi: 2 ** 20,
  gi: 2 ** 30,
  ti: 2 ** 40,
  pi: 2 ** 50,
};

const DURATION_PATTERN = /^(\d+(?:\.\d+)?) ?([a-z]+)$/;
const SIZE_PATTERN = /^(\d+(?:\.\d+)?) ?([a-zA-Z]*)$/;

/** Milliseconds in a duration such as `"500ms"`, `"30s"`, `"5m"`, `"2h"`, `"7d"`, `"1w"`. */
export function parseDuration(text: string): number {
  const match = DURATION_PATTERN.exec(text);
  const factor = match?.[2] === undefined ? undefined : DURATION_UNITS_MS[match[2]];
  if (match?.[1] === undefined || factor === undefined) {
    throw new RangeError(`invalid duration ${JSON.stringify(text)}: expected a number and a unit (ms, s, m, h, d, w), like "30s"`);
  }
  return toSafeInteger(Number(match[1]) * factor, 'duration', text);
}

/**
 * Bytes in a size such as `"50GiB"`, `"50Gi"`, `"512MiB"`, `"10GB"`, `"100mb"` or `"123"`
 * (plain bytes). Binary (KiB…PiB, Ki…Pi) and decimal (KB…PB) units, any letter case.
 */
export function parseSize(text: string): number {
  const match = SIZE_PATTERN.exec(text);
  const unit = match?.[2]?.toLowerCase();
  const factor = unit === undefined ? undefined : unit === '' ? 1 : SIZE_UNITS_BYTES[unit];
  if (match?.[1] === undefined || factor === undefined) {
    throw new RangeError(
      `invalid size ${JSON.stringify(text)}: expected a number of bytes, optionally with a unit ` +
        `(B, KB, MB, GB, TB, PB, KiB, MiB, GiB, TiB, PiB, Ki, Mi, Gi, Ti, Pi), like "50GiB"`,
    );
  }
  return toSafeInteger(Number(match[1]) * factor, 'size', text);
}

function toSafeInteger(value: number, what: string, text: string): number {
  const rounded = Math.round(value);
  if (!Number.isSafeInteger(rounded)) {
    throw new RangeError(`invalid ${what} ${JSON.stringify(text)}: too large`);
  }
  return rounded;
}

const BYTE_STEPS: readonly (readonly [string, number])[] = [
  ['PiB', 2 ** 50],
  ['TiB', 2 ** 40],
  ['GiB', 2 ** 30],
  ['MiB', 2 ** 20],
  ['KiB', 2 ** 10],
];

const DURATION_STEPS: readonly (readonly [string, number])[] = [
  ['d', DAY_MS],
  ['h', HOUR_MS],
  ['m', MINUTE_MS],
  ['s', SECOND_MS],
];

/** `"50GiB"`, `"1.5MiB"`, `"512B"`: binary units, at most two decimals, parseable by `parseSize`. */
export function formatBytes(bytes: number): string {
  return formatWithSteps(bytes, BYTE_STEPS, 'B');
}

/** `"30d"`, `"1.5h"`, `"250ms"`: the largest unit that fits, parseable by `parseDuration`. */
export function formatDuration(ms: number): string {
  return formatWithSteps(ms, DURATION_STEPS, 'ms');
}

function formatWithSteps(value: number, steps: typeof BYTE_STEPS, baseUnit: string): string {
  if (!Number.isFinite(value)) return String(value);
  if (value < 0) return `-${formatWithSteps(-value, steps, baseUnit)}`;
  for (const [unit, size] of steps) {
    if (value >= size) return `${trimDecimals(value / size)}${unit}`;
  }
  return `${trimDecimals(value)}${baseUnit}`;
}

function trimDecimals(value: number): string {
  return String(Number(value.toFixed(2)));
}
