/**
 * The listening socket: Bun.serve around the app's fetch, with the request log, the Host check
 * and `reusePort: false` so a second daemon on the same port fails loudly instead of sharing it.
 */
import type { Server } from "bun";
import type { Logger } from "./shared/logger.ts";
import { jsonError } from "./http/errors.ts";
import { pathOf } from "./http/request-path.ts";

export interface ServeOptions {
  host: string;
  port: number;
  bodyLimitBytes: number;
  /** The inference and proxy routes' own limit (they stream; the app enforces it). */
  streamedBodyLimitBytes?: number;
  /** Seconds a connection may stay silent (default 30); streaming routes lift it per request. */
  idleTimeoutS?: number;
  logger: Logger;
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
      let response: Response;
      // Without Host (HTTP/1.0, or empty) Bun's request.url is not absolute: nothing can route it.
      if (!request.headers.get("host")) {
        response = jsonError(400, "MISSING_HOST", "the request has no Host header");
      } else {
        try {
          response = await fetch(request, srv);
        } catch (e) {
          opts.logger.error("request crashed", { err: (e as Error)?.stack ?? String(e) });
          response = jsonError(500, "INTERNAL", "internal error");
        }
      }
      opts.logger.info("request", {
        method: request.method,
        path: request.headers.get("host") ? pathOf(request) : request.url,
        status: response.status,
        ms: Math.round((performance.now() - started) * 10) / 10,
      });
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
