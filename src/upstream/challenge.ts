/**
 * `WWW-Authenticate` parsing (RFC 7235 §4.1, §2.1):
 *
 *   WWW-Authenticate = 1#challenge
 *   challenge  = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
 *   auth-param = token BWS "=" BWS ( token / quoted-string )
 *
 * Commas separate both challenges and parameters; a parameter is `name=`, a new
 * challenge is a bare token. Quoted strings may hold commas and `\"` escapes, e.g.
 * `scope="repository:a/b:pull,push"`.
 */
export interface Challenge {
  readonly scheme: 'bearer' | 'basic';
  /** Parameter names lower-cased (they are case-insensitive); values unquoted. */
  readonly params: ReadonlyMap<string, string>;
}

interface RawChallenge {
  readonly scheme: string;
  readonly params: Map<string, string>;
}

const TCHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;

/** The first Bearer challenge, else the first Basic one; undefined when neither. */
export function parseWwwAuthenticate(header: string): Challenge | undefined {
  const challenges = parseChallenges(header);
  const pick = (scheme: 'bearer' | 'basic'): Challenge | undefined => {
    const found = challenges.find((c) => c.scheme === scheme);
    return found && { scheme, params: found.params };
  };
  return pick('bearer') ?? pick('basic');
}

function parseChallenges(header: string): RawChallenge[] {
  const challenges: RawChallenge[] = [];
  const cursor = { text: header, at: 0 };
  let current: RawChallenge | undefined;
  while (skip(cursor, /[\s,]/) < header.length) {
    const name = readToken(cursor);
    if (name === '') {
      cursor.at++; // a stray character: skip it rather than loop
      continue;
    }
    skip(cursor, /[ \t]/);
    if (current !== undefined && header[cursor.at] === '=') {
      cursor.at++;
      readParam(cursor, current, name.toLowerCase());
    } else {
      current = { scheme: name.toLowerCase(), params: new Map() };
      challenges.push(current);
    }
  }
  return challenges;
}

/** After `name=`: a quoted string or a token; `name==…` up to a comma is a token68, ignored. */
function readParam(cursor: Cursor, challenge: RawChallenge, name: string): void {
  skip(cursor, /[ \t]/);
  const next = cursor.text[cursor.at];
  if (next === undefined || next === ',' || next === '=') {
    skip(cursor, /=/);
    return;
  }
  const value = next === '"' ? readQuoted(cursor) : readBare(cursor);
  if (!challenge.params.has(name)) challenge.params.set(name, value);
}

interface Cursor {
  readonly text: string;
  at: number;
}

function skip(cursor: Cursor, chars: RegExp): number {
  while (cursor.at < cursor.text.length && chars.test(cursor.text[cursor.at] ?? '')) cursor.at++;
  return cursor.at;
}

function readToken(cursor: Cursor): string {
  const start = cursor.at;
  skip(cursor, TCHAR);
  return cursor.text.slice(start, cursor.at);
}

/** Lenient: unquoted values run to the next comma or space (some realms are sent bare). */
function readBare(cursor: Cursor): string {
  const start = cursor.at;
  skip(cursor, /[^,\s]/);
  return cursor.text.slice(start, cursor.at);
}

/** A quoted-string; `\x` stands for x. An unterminated string runs to the end. */
function readQuoted(cursor: Cursor): string {
  let value = '';
  cursor.at++;
  while (cursor.at < cursor.text.length) {
    const char = cursor.text[cursor.at++];
    if (char === '"') break;
    value += char === '\\' ? (cursor.text[cursor.at++] ?? '') : char;
  }
  return value;
}
