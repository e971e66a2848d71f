/**
 * The listening socket: Bun.serve around the app's fetch, with the request log, the Host check
 * and `reusePort: false` so a second daemon on the same port fails loudly instead of sharing it.
 * Every request gets its context here first (correlation id, deadline; src/shared/correlation.ts;
 * the app answers an expired X-Deadline after auth), and every answer carries `X-Correlation-ID`
 * and waits for what the context holds (the audit flush of a security event).
 */
import type { Server } from "bun";
import type { Logger } from "./shared/logger.ts";
import { jsonError } from "./http/errors.ts";
import { pathOf } from "./http/request-path.ts";
import { CORRELATION_HEADER, contextOf } from "./shared/correlation.ts";

/** Routes machines poll every few seconds. */
const POLLED_PATHS: ReadonlySet<string> = new Set(["/v1/health", "/metrics"]);

/** What the socket tells about each answered request (the HTTP metrics). */
export interface AnsweredRequest {
  method: string;
  /** The routed path (no query); null without a Host header. */
  path: string | null;
  status: number;
  seconds: number;
}

export interface ServeOptions {
  host: string;
  port: number;
  bodyLimitBytes: number;
  /** The inference and proxy routes' own limit (they stream; the app enforces it). */
  streamedBodyLimitBytes?: number;
  /** Seconds a connection may stay silent (default 30); streaming routes lift it per request. */
  idleTimeoutS?: number;
  logger: Logger;
  /** Told after each answer (metrics). */
  onAnswered?: (r: AnsweredRequest) => void;
}

type FetchHandler = (request: Request, server: Server<undefined>) => Response | Promise<Response>;

export interface HiveServer {
  server: Server<undefined>;
  url: string;
  /** Stop accepting; `force` also closes open connections. */
  stop(force?: boolean): Promise<void>;
}

export function serve(fetch: FetchHandler, opts: ServeOptions): HiveServer {
  const server = Bun.serve({
    hostname: opts.host,
    port: opts.port,
    reusePort: false,
    // Bun's own cap answers 413 with an empty body, before auth; the app's limit (a hook after
    // auth) answers with the JSON error, so this cap only stops bodies no route could accept.
    maxRequestBodySize: Math.max(opts.bodyLimitBytes * 4, 16 * 1024 * 1024, (opts.streamedBodyLimitBytes ?? 0) + 1024 * 1024),
    idleTimeout: opts.idleTimeoutS ?? 30,
    async fetch(request, srv) {
      const started = performance.now();
      const ctx = contextOf(request);
      const hasHost = !!request.headers.get("host");
      let response: Response;
      // Without Host (HTTP/1.0, or empty) Bun's request.url is not absolute: nothing can route it.
      if (!hasHost) {
        response = jsonError(400, "MISSING_HOST", "the request has no Host header");
      } else {
        try {
          response = await fetch(request, srv);
        } catch (e) {
          opts.logger.error("request crashed", { err: (e as Error)?.stack ?? String(e) });
          response = jsonError(500, "INTERNAL", "internal error");
        }
      }
      if (ctx.holding) await ctx.held();
      response = withCorrelationId(response, ctx.correlationId);
      const path = hasHost ? pathOf(request) : null;
      const ms = performance.now() - started;
      // A successful poll by a machine (queen-rbee's health checks, a Prometheus scrape) is a debug
      // line: at info they would bury what people read in journald. Any failure stays at info.
      const quiet = response.status < 400 && path !== null && POLLED_PATHS.has(path);
      (quiet ? opts.logger.debug : opts.logger.info)("request", {
        method: request.method,
        path: path ?? request.url,
        status: response.status,
        ms: Math.round(ms * 10) / 10,
        correlation_id: ctx.correlationId,
      });
      opts.onAnswered?.({ method: request.method, path, status: response.status, seconds: ms / 1000 });
      return response;
    },
    error(e) {
      opts.logger.error("server error", { err: e.message });
      return jsonError(500, "INTERNAL", "internal error");
    },
  });
  const hostForUrl = opts.host.includes(":") ? `[${opts.host}]` : opts.host;
  return {
    server,
    url: `http://${hostForUrl}:${server.port}`,
    stop: (force = false) => server.stop(force),
  };
}

/** Every answer names its correlation id; a Response with immutable headers is re-wrapped. */
function withCorrelationId(response: Response, id: string): Response {
  try {
    response.headers.set(CORRELATION_HEADER, id);
    return response;
  } catch {
    const copy = new Response(response.body, response);
    copy.headers.set(CORRELATION_HEADER, id);
    return copy;
  }
}
