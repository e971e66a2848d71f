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
  /** Something is held: the answer must wait for held(). */
  readonly holding: boolean;
  /** Resolves when everything held has settled (never rejects). */
  held(): Promise<void>;
}

/** A class, not closures, and no promise unless something is held: this runs for every request. */
class Context implements RequestContext {
  readonly correlationId: string;
  readonly deadline: number | null;
  readonly deadlineInvalid: boolean;
  private holds: Promise<unknown>[] | null = null;

  constructor(headers: Headers) {
    const deadline = parseDeadline(headers.get("x-deadline"));
    this.correlationId = correlationIdFrom(headers.get(CORRELATION_HEADER));
    this.deadline = deadline.value;
    this.deadlineInvalid = deadline.invalid;
  }

  hold(p: Promise<unknown>): void {
    (this.holds ??= []).push(p);
  }

  get holding(): boolean {
    return this.holds !== null && this.holds.length > 0;
  }

  async held(): Promise<void> {
    while (this.holds && this.holds.length > 0) await Promise.allSettled(this.holds.splice(0));
  }
}

export function createRequestContext(headers: Headers): RequestContext {
  return new Context(headers);
}

/** Where a request's context is kept: a symbol-keyed property (cheaper than a WeakMap lookup per hook). */
const CONTEXT = Symbol("rbee.requestContext");

/** The request's context: made at the socket; made here on first use for requests that did not pass it (app.handle in tests). */
export function contextOf(request: Request): RequestContext {
  const holder = request as Request & { [CONTEXT]?: RequestContext };
  return (holder[CONTEXT] ??= new Context(request.headers));
}
