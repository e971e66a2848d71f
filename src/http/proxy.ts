/**
 * Worker traffic routes, thin: the inference pass-through, the proxy to any path of a worker, and
 * the activity that callers talking to workers directly report. The two forwarding routes stream
 * their bodies both ways, so they skip the global body limit (they count against [workers]
 * proxy_body_limit_mb as the body streams), are never cut by the server's idle timeout, and are
 * not parsed by Elysia (`parse: "none"`).
 */
import { Elysia, t } from "elysia";
import { HiveError } from "../shared/errors.ts";
import type { WorkerActivity } from "../workers/activity.ts";
import type { Upstream, WorkerPassthrough } from "../workers/passthrough.ts";
import type { WorkerRegistry } from "../workers/registry.ts";
import { ActivityReport, WorkerInfo } from "../workers/schemas.ts";
import { jsonError } from "./errors.ts";
import { ErrorResponse, Field, errorResponses, namedModels, streamedResponse, wireRequest } from "./schemas.ts";

const errorJson = (description: string) => ({ description, content: { "application/json": { schema: { $ref: "#/components/schemas/ErrorResponse" } } } });
import type { ServerRef } from "./server-ref.ts";

/** Paths whose bodies stream to a worker: the body-limit hook leaves them to the pass-through. */
const STREAMED = /^\/v1\/workers\/[^/]+\/(inference$|proxy\/)/;
export const isStreamedPath = (path: string) => STREAMED.test(path);

export interface ProxyControllerDeps {
  passthrough: WorkerPassthrough;
  activity: WorkerActivity;
  registry: WorkerRegistry;
  server: ServerRef;
}

const IdParams = t.Object({ id: Field.workerId() });
/** What the proxy forwards (TRACE and CONNECT are not for a worker). */
const PROXIED_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] as const;
const WORKERS_PREFIX = "/v1/workers/";

/** `/v1/workers/<id>/proxy/<rest>?<query>` → `/<rest>?<query>`, exactly as the caller wrote it (no decoding). */
export function upstreamPathOf(url: string): string {
  const path = url.slice(url.indexOf("/", url.indexOf("//") + 2));
  const afterId = path.indexOf("/", WORKERS_PREFIX.length);
  return path.slice(afterId + "/proxy".length);
}

/** An error before the worker answered; a full worker says when to come back. */
function refusal(e: HiveError): Response {
  const res = jsonError(e.status, e.code, e.message, e.details);
  const retryAfter = e.details?.retry_after_s;
  if (typeof retryAfter === "number") res.headers.set("retry-after", String(retryAfter));
  return res;
}

const forwarded = {
  ...streamedResponse("*/*", "the worker's answer as it streams (status, headers and body are the worker's)"),
  401: errorJson("no valid Bearer token"),
  404: errorJson("WORKER_NOT_FOUND: no live worker with this id"),
  413: errorJson("PAYLOAD_TOO_LARGE: the body is over [workers] proxy_body_limit_mb"),
  429: errorJson("WORKER_BUSY: no free slot and the queue is full, or no slot freed in time; Retry-After says when to come back"),
  502: errorJson("WORKER_UNREACHABLE: the worker did not answer"),
  503: errorJson("WORKER_NOT_READY: loading, restarting or stopping"),
};

export const proxyController = (d: ProxyControllerDeps) => {
  const forward = async (request: Request, id: string, upstream: Upstream): Promise<Response> => {
    d.server.current?.timeout(request, 0); // tokens may be seconds apart, the whole answer minutes long
    try {
      return await d.passthrough.forward(request, id, upstream);
    } catch (e) {
      if (e instanceof HiveError) return refusal(e);
      throw e;
    }
  };
  const errors = { ...errorResponses, 413: ErrorResponse, 429: ErrorResponse, 502: ErrorResponse, 503: ErrorResponse };
  const proxyHook = {
    parse: "none" as const,
    detail: {
      tags: ["workers"],
      summary: "Any method and path forwarded to the worker unchanged (query, headers minus hop-by-hop, body streamed both ways), e.g. …/proxy/v1/chat/completions",
      responses: forwarded,
    },
  };
  let app = new Elysia({ name: "hive.proxy" })
    .model(namedModels({ ErrorResponse, ActivityReport: wireRequest(ActivityReport) }))
    .post("/v1/workers/:id/inference", ({ request, params }) => forward(request, params.id, { kind: "inference" }), {
      parse: "none",
      params: IdParams,
      detail: {
        tags: ["workers"],
        summary: "Inference through the hive: forwarded to the worker's inference route (llm-worker-rbee: POST /v1/inference, SSE) and streamed back as it arrives",
        responses: forwarded,
      },
    });
  for (const method of PROXIED_METHODS) {
    app = app.route(method, "/v1/workers/:id/proxy/*", ({ request, params }) => forward(request, (params as { id: string }).id, { kind: "path", pathAndQuery: upstreamPathOf(request.url) }), proxyHook) as typeof app;
  }
  return app
    .post(
      "/v1/workers/:id/activity",
      ({ params, body }) => {
        d.activity.report(params.id, body?.in_flight);
        return d.registry.live(params.id) as WorkerInfo;
      },
      {
        params: IdParams,
        body: t.Optional(wireRequest(ActivityReport)),
        response: { 200: WorkerInfo, ...errors },
        detail: {
          tags: ["workers"],
          summary: 'Activity of a caller that talks to the worker directly: {"in_flight": n} (its requests there now), or an empty body for a touch; resets the idle clock',
        },
      },
    );
};
