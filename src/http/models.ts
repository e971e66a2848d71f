/** Model routes: catalog, downloads with live progress (upstream SSE shape), deletion. */
import { Elysia, t } from "elysia";
import type { DownloadTracker } from "../models/download-tracker.ts";
import type { ModelService } from "../models/model-service.ts";
import { CatalogEntry, DownloadJobInfo } from "../models/model-catalog/types.ts";
import { ErrorResponse, Field, errorResponses, streamedResponse } from "./schemas.ts";
import { notFound } from "../shared/errors.ts";
import { lastEventId, sseResponse } from "./sse.ts";
import type { ServerRef } from "./server-ref.ts";

const DownloadBody = t.Object({
  model_ref: Field.modelRef("hf:org/repo, hf:org/repo:Q4_K_M, hf:org/repo/path/file.gguf or file:/abs/path"),
  revision: t.Optional(Field.revision()),
});
const DownloadResponse = t.Object({
  download_id: t.String({ description: '"cached" when the model is already in the catalog' }),
  local_path: t.Union([t.String(), t.Null()]),
  model_ref: t.String(),
  joined: t.Boolean({ description: "true when this request joined a download already running" }),
});
const ModelQuery = t.Object({ model_ref: Field.modelRef(), revision: t.Optional(Field.revision()) });
const DownloadId = t.String({ minLength: 1, maxLength: 128, description: "download id (uuid)" });

export const modelsController = (
  models: ModelService,
  tracker: DownloadTracker,
  opts: { keepAliveMs: number; shutdown: AbortSignal; server: ServerRef },
) =>
  new Elysia({ name: "hive.models" })
    .post("/v1/models/download", ({ body }) => models.download(body.model_ref, body.revision), {
      body: DownloadBody,
      response: { 200: DownloadResponse, ...errorResponses },
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
      response: { 200: t.Object({ downloads: t.Array(DownloadJobInfo) }), ...errorResponses },
      detail: { tags: ["models"], summary: "Running and recently finished downloads" },
    })
    .delete(
      "/v1/models/download/:id",
      ({ params, query }) => tracker.cancel(params.id, { purge: query.purge === "true" || query.purge === "1" }),
      {
        params: t.Object({ id: DownloadId }),
        query: t.Object({ purge: t.Optional(t.Union([t.Literal("true"), t.Literal("false"), t.Literal("1"), t.Literal("0")], { description: "true: also delete the partial files", error: "query parameter purge: must be true, false, 1 or 0" })) }),
        response: { 200: DownloadJobInfo, ...errorResponses },
        detail: { tags: ["models"], summary: "Cancel a download; partial files are kept for resume unless ?purge=true" },
      },
    )
    .get("/v1/models", () => ({ models: models.list() }), {
      response: { 200: t.Object({ models: t.Array(CatalogEntry) }), ...errorResponses },
      detail: { tags: ["models"], summary: "Models in the catalog (complete and verified on disk)" },
    })
    .delete("/v1/models", ({ query }) => models.remove(query.model_ref, query.revision), {
      query: ModelQuery,
      response: {
        200: t.Object({ model_ref: t.String(), removed: t.Literal(true), freed_bytes: t.Integer() }),
        ...errorResponses,
        409: ErrorResponse,
      },
      detail: { tags: ["models"], summary: "Unregister a model and delete its downloaded files; 409 while a worker uses it" },
    });
