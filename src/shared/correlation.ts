/**
 * Per-request context: the correlation id (taken from `X-Correlation-ID` when it looks like one,
 * else a new uuid), the caller's deadline (`X-Deadline`, see deadline-propagation.ts) and what the
 * answer must wait for (the audit flush of a security event). One place makes it, at the socket
 * (src/server.ts); everything else reads it with `contextOf(request)` and passes it on explicitly
 * (HttpClient's `context` option, the pass-through) rather than through a global.
 *
 * Why not AsyncLocalStorage: a request starts work that outlives it (a worker's readiness polling
 * after a spawn, a model download, a restart). With ALS that work would inherit the request's
 * deadline and stop at it; an explicit context bounds only the calls that are passed one.
 */
import { randomUUID } from "node:crypto";
import { parseDeadline } from "./deadline-propagation.ts";

export const CORRELATION_HEADER = "x-correlation-id";

/** Visible ASCII, 1–128 characters: safe in a header, a log line and a JSON audit line. */
const VALID_CORRELATION_ID = /^[\x21-\x7e]{1,128}$/;

export const newCorrelationId = (): string => randomUUID();

/** The caller's id when it is valid; anything else (missing, too long, control characters) is replaced, never echoed. */
export function correlationIdFrom(value: string | null | undefined): string {
  return value && VALID_CORRELATION_ID.test(value) ? value : newCorrelationId();
}

/** What outbound calls made for a request carry: its correlation id and deadline. */
export interface OutboundContext {
  readonly correlationId: string;
  /** Unix ms by which the caller wants its answer; null = none. */
  readonly deadline: number | null;
}

export interface RequestContext extends OutboundContext {
  /** X-Deadline was present but not unix milliseconds. */
  readonly deadlineInvalid: boolean;
  /** The answer is sent only once `p` settles (bounded by whoever hands it in). */
  hold(p: Promise<unknown>): void;
  /** Resolves when everything held has settled (never rejects). */
  held(): Promise<void>;
}

const contexts = new WeakMap<Request, RequestContext>();

export function createRequestContext(headers: Headers): RequestContext {
  const deadline = parseDeadline(headers.get("x-deadline"));
  const holds: Promise<unknown>[] = [];
  return {
    correlationId: correlationIdFrom(headers.get(CORRELATION_HEADER)),
    deadline: deadline.value,
    deadlineInvalid: deadline.invalid,
    hold: (p) => void holds.push(p),
    held: async () => {
      while (holds.length > 0) await Promise.allSettled(holds.splice(0));
    },
  };
}

/** The request's context: made at the socket; made here on first use for requests that did not pass it (app.handle in tests). */
export function contextOf(request: Request): RequestContext {
  let ctx = contexts.get(request);
  if (!ctx) contexts.set(request, (ctx = createRequestContext(request.headers)));
  return ctx;
}
