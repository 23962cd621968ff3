/**
 * The one error type of the registry API. Codes are the OCI distribution spec's
 * (spec §"Error Codes"), verbatim; the HTTP layer renders them once as the envelope
 * `{ "errors": [ { code, message, detail } ] }`.
 */
export type ErrorCode =
  | 'BLOB_UNKNOWN'
  | 'DIGEST_INVALID'
  | 'MANIFEST_UNKNOWN'
  | 'MANIFEST_INVALID'
  | 'NAME_INVALID'
  | 'NAME_UNKNOWN'
  | 'SIZE_INVALID'
  | 'UNAUTHORIZED'
  | 'DENIED'
  | 'UNSUPPORTED'
  | 'TOOMANYREQUESTS'
  | 'UNAVAILABLE'
  | 'RANGE_INVALID';

const DEFAULT_STATUS: Readonly<Record<ErrorCode, number>> = {
  BLOB_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  MANIFEST_INVALID: 400,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429,
  UNAVAILABLE: 503,
  RANGE_INVALID: 416,
};

export interface RegistryErrorOptions {
  readonly statusCode?: number;
  readonly detail?: unknown;
  readonly headers?: Readonly<Record<string, string>>;
  readonly cause?: unknown;
}

export class RegistryError extends Error {
  readonly code: ErrorCode;
  readonly statusCode: number;
  readonly detail: unknown;
  readonly headers: Readonly<Record<string, string>>;

  constructor(code: ErrorCode, message: string, options: RegistryErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'RegistryError';
    this.code = code;
    this.statusCode = options.statusCode ?? DEFAULT_STATUS[code];
    this.detail = options.detail;
    this.headers = options.headers ?? {};
  }

  /** The OCI error envelope body. */
  toJSON(): { errors: { code: ErrorCode; message: string; detail?: unknown }[] } {
    const entry: { code: ErrorCode; message: string; detail?: unknown } = {
      code: this.code,
      message: this.message,
    };
    if (this.detail !== undefined) entry.detail = this.detail;
    return { errors: [entry] };
  }
}
