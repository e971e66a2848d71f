/**
 * The one outbound HTTP helper (the seed's rbee-http-client): timeouts, Bearer, JSON bodies and
 * errors that say which call failed. Every call to a worker or to queen-rbee goes through it.
 */
import { HiveError } from "./errors.ts";

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
}

export interface HttpResult<T = unknown> {
  status: number;
  ok: boolean;
  /** Parsed JSON when the body is JSON, else the text (or null when empty). */
  body: T;
  headers: Headers;
}

export class HttpClient {
  constructor(private readonly fetchImpl: FetchLike = fetch) {}

  /**
   * Never throws for an HTTP status; throws HiveError(502, UPSTREAM_UNREACHABLE) when the peer
   * cannot be reached and HiveError(504, UPSTREAM_TIMEOUT) when it does not answer in time.
   */
  async request<T = unknown>(url: string, opts: HttpRequestOptions): Promise<HttpResult<T>> {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    let body: string | undefined;
    if (opts.json !== undefined) {
      headers["content-type"] = "application/json";
      body = JSON.stringify(opts.json);
    }
    const timeout = AbortSignal.timeout(opts.timeoutMs);
    const signal = opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout;
    let res: Response;
    try {
      res = await this.fetchImpl(url, { method: opts.method ?? (body ? "POST" : "GET"), headers, body, signal });
    } catch (e) {
      throw this.failure(url, e, timeout.aborted);
    }
    let text: string;
    try {
      text = await res.text();
    } catch (e) {
      throw this.failure(url, e, timeout.aborted);
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

  private failure(url: string, e: unknown, timedOut: boolean): HiveError {
    const target = safeUrl(url);
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
