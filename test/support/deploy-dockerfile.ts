/**
 * Just enough of the Dockerfile and .dockerignore formats to check deploy/Dockerfile
 * and to replay its build steps without a Docker engine: instructions (comments
 * dropped, `\` continuations joined), stages, and context filtering.
 */
export interface Instruction {
  readonly keyword: string;
  readonly args: string;
  readonly line: number;
}

export interface Stage {
  readonly from: string;
  readonly name?: string;
  readonly instructions: readonly Instruction[];
}

const KEYWORDS = new Set(
  ['FROM', 'RUN', 'CMD', 'LABEL', 'EXPOSE', 'ENV', 'ADD', 'COPY', 'ENTRYPOINT', 'VOLUME', 'USER', 'WORKDIR', 'ARG'].concat([
    'ONBUILD',
    'STOPSIGNAL',
    'HEALTHCHECK',
    'SHELL',
  ]),
);

/** Throws on an unknown instruction, as `docker build` would. */
export function parseDockerfile(text: string): Instruction[] {
  const instructions: Instruction[] = [];
  let pending = '';
  let start = 0;
  for (const [index, raw] of text.split('\n').entries()) {
    const line = raw.trimEnd();
    if (pending === '' && (line.trim() === '' || line.trimStart().startsWith('#'))) continue;
    if (pending !== '' && line.trimStart().startsWith('#')) continue;
    if (pending === '') start = index + 1;
    pending += line.endsWith('\\') ? `${line.slice(0, -1)} ` : line;
    if (line.endsWith('\\')) continue;
    const match = /^\s*(\S+)\s*(.*)$/.exec(pending);
    pending = '';
    const keyword = (match?.[1] ?? '').toUpperCase();
    if (!KEYWORDS.has(keyword)) throw new Error(`line ${start}: unknown instruction ${match?.[1] ?? ''}`);
    instructions.push({ keyword, args: (match?.[2] ?? '').replace(/\s+/g, ' ').trim(), line: start });
  }
  if (pending !== '') throw new Error('Dockerfile ends inside a continued line');
  return instructions;
}

export function stages(instructions: readonly Instruction[]): Stage[] {
  const result: { from: string; name?: string; instructions: Instruction[] }[] = [];
  for (const instruction of instructions) {
    if (instruction.keyword === 'FROM') {
      const [from = '', as, name] = instruction.args.split(' ');
      result.push({ from, ...(as?.toUpperCase() === 'AS' && name ? { name } : {}), instructions: [] });
    } else {
      const stage = result.at(-1);
      if (!stage) throw new Error(`line ${instruction.line}: ${instruction.keyword} before FROM`);
      stage.instructions.push(instruction);
    }
  }
  return result;
}

/** `COPY [--from=x] src... dest` → its parts (no JSON form, no other flags). */
export function parseCopy(args: string): { from?: string; sources: string[]; dest: string } {
  const words = args.split(' ');
  const from = words[0]?.startsWith('--from=') ? words.shift()?.slice('--from='.length) : undefined;
  const dest = words.pop() ?? '';
  return { ...(from ? { from } : {}), sources: words, dest };
}

function globToRegExp(pattern: string): RegExp {
  const body = pattern
    .split('/')
    .map((part) =>
      part === '**'
        ? '.*'
        : part
            .replace(/[.+^${}()|[\]\\]/g, '\\$&')
            .replaceAll('*', '[^/]*')
            .replaceAll('?', '[^/]'),
    )
    .join('/');
  return new RegExp(`^${body}$`);
}

/**
 * Whether `path` (relative to the context, `/`-separated) is sent to the builder: the
 * last .dockerignore pattern matching it or one of its parent directories decides,
 * a leading `!` re-including.
 */
export function inContext(dockerignore: string, path: string): boolean {
  const patterns = dockerignore
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
  const prefixes = path.split('/').map((_, i, parts) => parts.slice(0, i + 1).join('/'));
  let included = true;
  for (const pattern of patterns) {
    const negated = pattern.startsWith('!');
    const regexp = globToRegExp((negated ? pattern.slice(1) : pattern).replace(/^\/+|\/+$/g, ''));
    if (prefixes.some((p) => regexp.test(p))) included = negated;
  }
  return included;
}
