/**
 * Deadlines: `X-Deadline: <unix ms>` on any request says when the caller stops waiting. An
 * expired one is answered 504 DEADLINE_EXCEEDED before any work (src/server.ts); otherwise the
 * time left bounds the hive's outbound calls made for that request (HttpClient's `context`, the
 * pass-through to a worker, the hub reads of a spawn), and the pass-through forwards the header.
 */
import { HiveError } from "./errors.ts";
import type { OutboundContext } from "./correlation.ts";

export const DEADLINE_HEADER = "x-deadline";

/** Unix ms as digits only, at most 16 (year 2286 and beyond are 14). */
const UNIX_MS = /^[0-9]{1,16}$/;

/** `value`: the deadline in unix ms (null when absent); `invalid`: present but not unix ms. */
export function parseDeadline(raw: string | null): { value: number | null; invalid: boolean } {
  if (raw === null) return { value: null, invalid: false };
  const v = raw.trim();
  if (!UNIX_MS.test(v)) return { value: null, invalid: true };
  return { value: Number(v), invalid: false };
}

export const deadlineExceeded = (what = "the request's deadline (X-Deadline) has passed") => new HiveError(504, "DEADLINE_EXCEEDED", what);

export const invalidDeadline = () => new HiveError(400, "INVALID_INPUT", "header X-Deadline: must be a unix time in milliseconds", { field: "X-Deadline" });

/** Milliseconds left before the deadline (may be ≤ 0), or null without one. */
export function remainingMs(ctx: Pick<OutboundContext, "deadline"> | undefined, now: number): number | null {
  return ctx?.deadline == null ? null : ctx.deadline - now;
}

/** `timeoutMs` shortened to the time left; throws 504 DEADLINE_EXCEEDED when none is left. */
export function boundTimeoutMs(timeoutMs: number, ctx: Pick<OutboundContext, "deadline"> | undefined, now: number): { timeoutMs: number; byDeadline: boolean } {
  const left = remainingMs(ctx, now);
  if (left === null || left >= timeoutMs) return { timeoutMs, byDeadline: false };
  if (left <= 0) throw deadlineExceeded();
  return { timeoutMs: left, byDeadline: true };
}

/**
 * A signal that aborts when the deadline passes (reason: the 504 error) and `clear` to drop its
 * timer once the call is over; undefined without a deadline; throws 504 when it has passed already.
 */
export function deadlineSignal(ctx: Pick<OutboundContext, "deadline"> | undefined, now: number): { signal: AbortSignal; clear: () => void } | undefined {
  const left = remainingMs(ctx, now);
  if (left === null) return undefined;
  if (left <= 0) throw deadlineExceeded();
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(deadlineExceeded()), left);
  return { signal: ac.signal, clear: () => clearTimeout(timer) };
}

/** True when `signal` (from deadlineSignal) is what aborted. */
export const isDeadlineAbort = (signal: AbortSignal | undefined): boolean =>
  !!signal?.aborted && signal.reason instanceof HiveError && signal.reason.code === "DEADLINE_EXCEEDED";

/**
 * `work` raced against the deadline: rejects with 504 DEADLINE_EXCEEDED when the deadline passes
 * first. The work itself is not cancelled (it may be shared with other callers); the caller stops
 * waiting for it.
 */
export function withDeadline<T>(work: Promise<T>, ctx: Pick<OutboundContext, "deadline"> | undefined, now: number): Promise<T> {
  const deadline = deadlineSignal(ctx, now);
  if (!deadline) return work;
  return new Promise<T>((resolve, reject) => {
    deadline.signal.addEventListener("abort", () => reject(deadline.signal.reason), { once: true });
    work.then(
      (v) => {
        deadline.clear();
        resolve(v);
      },
      (e) => {
        deadline.clear();
        reject(e);
      },
    );
  });
}
