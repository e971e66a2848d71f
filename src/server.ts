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
    // Bun's own cap answers 413 with an empty body; ours (below) answers with the JSON error.
    maxRequestBodySize: Math.max(opts.bodyLimitBytes * 4, 16 * 1024 * 1024),
    idleTimeout: 30,
    async fetch(request, srv) {
      const started = performance.now();
      let response: Response;
      const limited = await enforceBodyLimit(request, opts.bodyLimitBytes);
      if (limited instanceof Response) {
        response = limited;
      } else {
        try {
          response = await fetch(limited, srv);
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

const tooLarge = (limit: number, size?: number) =>
  jsonError(413, "PAYLOAD_TOO_LARGE", `request body ${size !== undefined ? `is ${size} bytes` : "is too large"}; the limit is ${limit} bytes`);

/**
 * Reject bodies over the limit with the JSON error. A declared length is checked up front; a
 * chunked body is read up to the limit and handed on as a buffered request.
 */
async function enforceBodyLimit(request: Request, limit: number): Promise<Request | Response> {
  const declared = request.headers.get("content-length");
  if (declared !== null) {
    const length = Number(declared);
    return length > limit ? tooLarge(limit, length) : request;
  }
  if (!request.body) return request;
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      void reader.cancel();
      return tooLarge(limit);
    }
    chunks.push(value);
  }
  return new Request(request.url, { method: request.method, headers: request.headers, body: Buffer.concat(chunks), signal: request.signal });
}
