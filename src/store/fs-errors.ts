/**
 * The file-system errors the store expects, named: a catch in the store answers only for
 * these and rethrows the rest, so a permission or I/O error surfaces instead of reading
 * as "not there".
 */

export function hasCode(err: unknown, code: string): boolean {
  return (err as NodeJS.ErrnoException | undefined)?.code === code;
}

/** For `.catch`: a missing file is an answer (`fallback`), anything else is an error. */
export function ifMissing<T>(fallback: T): (err: unknown) => T {
  return (err) => {
    if (hasCode(err, 'ENOENT')) return fallback;
    throw err;
  };
}

/** Text of a JSON file; undefined when it is not JSON (damaged: treated as absent). */
export function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    if (err instanceof SyntaxError) return undefined;
    throw err;
  }
}
