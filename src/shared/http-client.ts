/**
 * The one outbound HTTP helper (the seed's rbee-http-client): timeouts, Bearer, JSON bodies and
 * errors that say which call failed. Every call to a worker or to queen-rbee goes through it.
 * A call made for a request takes that request's `context`: its deadline shortens the timeout
 * (504 DEADLINE_EXCEEDED when it passes) and travels as `X-Deadline`, its correlation id as
 * `X-Correlation-ID`; calls of the hive's own (health checks, heartbeats) get a fresh id each.
 */
import { HiveError } from "./errors.ts";
import { CORRELATION_HEADER, newCorrelationId, type OutboundContext } from "./correlation.ts";
import { boundTimeoutMs, DEADLINE_HEADER, deadlineExceeded } from "./deadline-propagation.ts";

export type FetchLike = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

export interface HttpRequestOptions {
  method?: string;
  /** Sent as JSON with content-type application/json. */
  json?: unknown;
  headers?: Record<string, string>;
  /** Sent as `Authorization: Bearer <token>`. */
  token?: string;
  timeoutMs: number;
  signal?: AbortSignal;
  /** The request this call is made for (correlation id, deadline). */
  context?: OutboundContext;
}

export interface HttpResult<T = unknown> {
  status: number;
  ok: boolean;
  /** Parsed JSON when the body is JSON, else the text (or null when empty). */
  body: T;
  headers: Headers;
}

export class HttpClient {
  constructor(
    private readonly fetchImpl: FetchLike = fetch,
    /** Wall clock for deadlines (unix ms). */
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * Never throws for an HTTP status; throws HiveError(502, UPSTREAM_UNREACHABLE) when the peer
   * cannot be reached, HiveError(504, UPSTREAM_TIMEOUT) when it does not answer in time and
   * HiveError(504, DEADLINE_EXCEEDED) when the context's deadline passed first (or had passed).
   */
  async request<T = unknown>(url: string, opts: HttpRequestOptions): Promise<HttpResult<T>> {
    const bound = boundTimeoutMs(opts.timeoutMs, opts.context, this.now());
    const headers: Record<string, string> = { ...opts.headers };
    headers[CORRELATION_HEADER] = opts.context?.correlationId ?? newCorrelationId();
    if (opts.context?.deadline != null) headers[DEADLINE_HEADER] = String(opts.context.deadline);
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    let body: string | undefined;
    if (opts.json !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(opts.json);
    }
    const timeout = AbortSignal.timeout(bound.timeoutMs);
    const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
    let res: Response;
    try {
      res = await this.fetchImpl(url, { method: opts.method ?? (body ? "POST" : "GET"), headers, body, signal });
    } catch (e) {
      throw this.failure(url, e, timeout.aborted, bound.byDeadline);
    }
    let text: string;
    try {
      text = await res.text();
    } catch (e) {
      throw this.failure(url, e, timeout.aborted, bound.byDeadline);
    }
    let parsed: unknown = text.length ? text : null;
    if (text.length && (res.headers.get("content-type") ?? "").includes("json")) {
      try {
        parsed = JSON.parse(text);
      } catch {
        // keep the text: a peer that lies about its content type is reported as it is
      }
    }
    return { status: res.status, ok: res.ok, body: parsed as T, headers: res.headers };
  }

  private failure(url: string, e: unknown, timedOut: boolean, byDeadline: boolean): HiveError {
    const target = safeUrl(url);
    if (timedOut && byDeadline) return deadlineExceeded(`the request's deadline (X-Deadline) passed while waiting for ${target}`);
    if (timedOut) return new HiveError(504, "UPSTREAM_TIMEOUT", `no answer from ${target} in time`);
    return new HiveError(502, "UPSTREAM_UNREACHABLE", `cannot reach ${target}: ${(e as Error)?.message ?? String(e)}`);
  }
}

/** URL without credentials or query, for messages and logs. */
export function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}${u.pathname}`;
  } catch {
    return "(invalid url)";
  }
}
