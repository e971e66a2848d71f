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

const FS_ERRNO_MEANING: Record<string, string> = {
  EROFS: "read-only file system",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  ENOTDIR: "a path component is not a directory",
  ENOSPC: "no space left on device",
  EDQUOT: "disk quota exceeded",
  EEXIST: "a file is in the way",
};

/** `EROFS (read-only file system)`: the errno and what it means, without the stack or the path twice. */
export function describeFsError(e: unknown): string {
  const code = (e as NodeJS.ErrnoException)?.code;
  if (!code) return errorMessage(e);
  return `${code} (${FS_ERRNO_MEANING[code] ?? errorMessage(e)})`;
}
