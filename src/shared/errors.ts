/**
 * One error type for the whole daemon. Services throw it; the HTTP error plugin turns it into
 * `{"error":{"code","message"}}` with `status`. Codes are stable: callers branch on them.
 */
export class HiveError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** Extra machine-readable detail added to the error body (never internals). */
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = "HiveError";
  }
}

export const invalidInput = (message: string, details?: Record<string, unknown>) =>
  new HiveError(400, "INVALID_INPUT", message, details);

export const notFound = (code: string, message: string, details?: Record<string, unknown>) =>
  new HiveError(404, code, message, details);

export const conflict = (code: string, message: string, details?: Record<string, unknown>) =>
  new HiveError(409, code, message, details);

export function isHiveError(e: unknown): e is HiveError {
  return e instanceof HiveError;
}

/** Message of any thrown value, for logs. */
export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}
