/**
 * The listening socket: Bun.serve around the app's fetch, with the request log, the body limit
 * and `reusePort: false` so a second daemon on the same port fails loudly instead of sharing it.
 */
import type { Server } from "bun";
import type { Logger } from "./shared/logger.ts";
import { jsonError } from "./http/errors.ts";

export interface ServeOptions {
  host: string;
  port: number;
  bodyLimitBytes: number;
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
    maxRequestBodySize: opts.bodyLimitBytes,
    idleTimeout: 30,
    async fetch(request, srv) {
      const started = performance.now();
      let response: Response;
      const length = Number(request.headers.get("content-length") ?? 0);
      if (length > opts.bodyLimitBytes) {
        response = jsonError(413, "PAYLOAD_TOO_LARGE", `request body is ${length} bytes; the limit is ${opts.bodyLimitBytes}`);
      } else {
        try {
          response = await fetch(request, srv);
        } catch (e) {
          opts.logger.error("request crashed", { err: (e as Error)?.stack ?? String(e) });
          response = jsonError(500, "INTERNAL", "internal error");
        }
      }
      const url = new URL(request.url);
      opts.logger.info("request", {
        method: request.method,
        path: url.pathname,
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
