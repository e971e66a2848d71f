/**
 * Retry policy shared by hub API calls and ranged file parts.
 * Transient = network errors / connection resets / 408 / 429 / 5xx / stalls; everything else is final.
 */
import { HiveError, errorMessage } from "../../shared/errors.ts";

export class TransientError extends Error {
  constructor(
    message: string,
    /** Server-requested delay (Retry-After), already clamped. */
    readonly retryAfterMs?: number,
    readonly status?: number,
  ) {
    super(message);
    this.name = "TransientError";
  }
}

export interface RetryPolicy {
  /** Retries after the first attempt. */
  maxRetries: number;
  /** First backoff delay, doubled each retry, ±25 % jitter. */
  retryBaseMs: number;
  /** Backoff cap. */
  retryMaxMs: number;
  /** Cap on a server's Retry-After. */
  retryAfterMaxMs: number;
}

/**
 * `Retry-After` as milliseconds: delta-seconds (fractions accepted, e.g. "0.05") or an HTTP-date.
 * Clamped to [0, maxMs]. Undefined when absent or unparseable.
 */
export function parseRetryAfter(value: string | null, maxMs: number, now = Date.now()): number | undefined {
  if (value === null) return undefined;
  const v = value.trim();
  if (v === "") return undefined;
  let ms: number;
  if (/^\d+(\.\d+)?$/.test(v)) ms = Number(v) * 1000;
  else {
    const t = Date.parse(v);
    if (Number.isNaN(t)) return undefined;
    ms = t - now;
  }
  return Math.min(Math.max(0, Math.round(ms)), maxMs);
}

export function backoffMs(attempt: number, policy: RetryPolicy, random = Math.random): number {
  const base = Math.min(policy.retryMaxMs, policy.retryBaseMs * 2 ** attempt);
  return Math.max(0, Math.round(base * (0.75 + 0.5 * random())));
}

export function abortError(signal: AbortSignal): Error {
  const r = signal.reason;
  return r instanceof Error ? r : new DOMException(typeof r === "string" ? r : "The operation was aborted", "AbortError");
}

/** Sleep that ends early (rejecting) when `signal` aborts. */
export function sleepAbortable(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError(signal));
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(abortError(signal!));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/** Is this error one we retry (network-level failure, not a cancel)? */
export function isTransient(e: unknown, signal?: AbortSignal): boolean {
  if (signal?.aborted) return false;
  if (e instanceof TransientError) return true;
  if (e instanceof HiveError) return false;
  // fetch() network failures: TypeError / Error with code ECONNRESET, ECONNREFUSED, ...
  return e instanceof Error;
}

/**
 * Run `fn` until it succeeds, a non-transient error is thrown, or retries are exhausted (then
 * HiveError 502 HUB_UNREACHABLE naming the last error). Honors Retry-After from TransientError.
 */
export async function withRetry<T>(
  what: string,
  fn: (attempt: number) => Promise<T>,
  policy: RetryPolicy,
  signal?: AbortSignal,
  onRetry?: (attempt: number, delayMs: number, err: unknown) => void,
): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (e) {
      if (signal?.aborted) throw abortError(signal);
      if (!isTransient(e, signal)) throw e;
      if (attempt >= policy.maxRetries) {
        throw new HiveError(502, "HUB_UNREACHABLE", `${what} failed after ${attempt + 1} attempts: ${errorMessage(e)}`, {
          attempts: attempt + 1,
          ...(e instanceof TransientError && e.status ? { last_status: e.status } : {}),
        });
      }
      const delay = e instanceof TransientError && e.retryAfterMs !== undefined ? e.retryAfterMs : backoffMs(attempt, policy);
      onRetry?.(attempt + 1, delay, e);
      await sleepAbortable(delay, signal);
    }
  }
}
