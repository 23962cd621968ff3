/**
 * The platform an index entry is for (OCI image spec `image-index.md`, `platform`), and
 * the `--platform` selection users write as `os/architecture[/variant]`.
 */
export interface Platform {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string;
}

/** `linux/amd64`, `linux/arm64/v8`; undefined when the text is not one. */
export function parsePlatform(text: string): Platform | undefined {
  const [os, architecture, variant, ...rest] = text.split('/');
  if (!os || !architecture || rest.length > 0) return undefined;
  return { os, architecture, ...(variant ? { variant } : {}) };
}

export function formatPlatform(platform: Platform): string {
  return [platform.os, platform.architecture, platform.variant].filter(Boolean).join('/');
}

/**
 * Whether an index entry's platform is selected. No selection takes every entry; an entry
 * without a platform is taken only then. A selection without a variant matches every
 * variant (`linux/arm64` takes `linux/arm64/v8`).
 */
export function platformMatches(platform: Platform | undefined, selected: readonly Platform[] | undefined): boolean {
  if (!selected) return true;
  if (!platform) return false;
  return selected.some(
    (s) => s.os === platform.os && s.architecture === platform.architecture && (s.variant === undefined || s.variant === platform.variant),
  );
}
