/** Model routes: catalog, downloads with live progress (upstream SSE shape), deletion. */
import { Elysia, t } from "elysia";
import type { DownloadTracker } from "../models/download-tracker.ts";
import type { ModelService } from "../models/model-service.ts";
import { CatalogEntry } from "../models/model-catalog/types.ts";
import { DownloadAnswer, DownloadJobInfo, DownloadList, DownloadRequest, ModelList, ModelQuery, RemovedModel } from "../models/schemas.ts";
import { ErrorResponse, errorResponses, namedModels, streamedResponse } from "./schemas.ts";
import { notFound } from "../shared/errors.ts";
import { lastEventId, sseResponse } from "./sse.ts";
import type { ServerRef } from "./server-ref.ts";

const DownloadId = t.String({ minLength: 1, maxLength: 128, description: "download id (uuid)" });
const PurgeQuery = t.Object({
  purge: t.Optional(
    t.Union([t.Literal("true"), t.Literal("false"), t.Literal("1"), t.Literal("0")], {
      description: "true: also delete the partial files",
      error: "query parameter purge: must be true, false, 1 or 0",
    }),
  ),
});

export const modelsController = (
  models: ModelService,
  tracker: DownloadTracker,
  opts: {
    keepAliveMs: number;
    shutdown: AbortSignal;
    server: ServerRef;
    /** A catalog entry's memory estimate at the default context (bytes), or null; none: null for all. */
    memoryEstimate?: (entry: CatalogEntry) => Promise<number | null>;
  },
) =>
  new Elysia({ name: "hive.models" })
    .model(namedModels({ DownloadRequest, DownloadAnswer, DownloadJobInfo, DownloadList, CatalogEntry, ModelList, RemovedModel }))
    .post("/v1/models/download", ({ body }) => models.download(body), {
      body: "DownloadRequest",
      response: { 200: "DownloadAnswer", ...errorResponses },
      detail: {
        tags: ["models"],
        summary: "Start (or join) a model download; answers at once with the download id",
      },
    })
    .get(
      "/v1/models/download/progress",
      ({ query, request }) => {
        // Unknown (or expired) id → 404 JSON before any stream starts.
        if (!tracker.get(query.id)) throw notFound("DOWNLOAD_NOT_FOUND", `no download ${query.id} (finished ones stay for a while)`);
        const after = lastEventId(request);
        return sseResponse({
          request,
          server: opts.server.current,
          keepAliveMs: opts.keepAliveMs,
          shutdown: opts.shutdown,
          start: (sink) =>
            tracker.subscribe(query.id, after, (event) => {
              sink.send({ id: event.id, data: event.data });
              if (event.data.stage !== "downloading") {
                sink.send({ data: "[DONE]" });
                sink.close();
              }
            }),
        });
      },
      {
        query: t.Object({ id: DownloadId }),
        detail: {
          tags: ["models"],
          summary:
            'Download progress as SSE: data lines {"stage":"downloading"|"complete"|"error",…}, then data: [DONE]; resume with Last-Event-ID',
          responses: {
            ...streamedResponse("text/event-stream", 'id: <n> and data: {"stage",…} per event, then data: [DONE]; `: keep-alive` every 10 s'),
            404: { description: "unknown or expired download id (DOWNLOAD_NOT_FOUND)" },
          },
        },
      },
    )
    .get("/v1/models/downloads", () => ({ downloads: tracker.list() }), {
      response: { 200: "DownloadList", ...errorResponses },
      detail: { tags: ["models"], summary: "Running and recently finished downloads" },
    })
    .delete(
      "/v1/models/download/:id",
      ({ params, query }) => tracker.cancel(params.id, { purge: query.purge === "true" || query.purge === "1" }),
      {
        params: t.Object({ id: DownloadId }),
        query: PurgeQuery,
        response: { 200: "DownloadJobInfo", ...errorResponses },
        detail: { tags: ["models"], summary: "Cancel a download; partial files are kept for resume unless ?purge=true" },
      },
    )
    .get(
      "/v1/models",
      async () => ({
        models: await Promise.all(models.list().map(async (m) => ({ ...m, memory_estimate_bytes: (await opts.memoryEstimate?.(m)) ?? null }))),
      }),
      {
        response: { 200: "ModelList", ...errorResponses },
        detail: { tags: ["models"], summary: "Models in the catalog (complete and verified on disk), each with its memory estimate" },
      },
    )
    .delete("/v1/models", ({ query }) => models.remove(query), {
      query: ModelQuery,
      response: { 200: "RemovedModel", ...errorResponses, 409: ErrorResponse },
      detail: { tags: ["models"], summary: "Unregister a model and delete its downloaded files; 409 while a worker uses it" },
    });
