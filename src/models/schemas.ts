/**
 * The models area's requests and answers as TypeBox schemas, one definition each: the controller
 * validates and documents them (named OpenAPI components), the services take and return their
 * `static` types.
 */
import { Nullable, t, type Static } from "../shared/schema.ts";
import { Field } from "../shared/fields.ts";
import { CatalogEntry } from "./model-catalog/types.ts";

/** POST /v1/models/download */
export const DownloadRequest = t.Object({
  model_ref: Field.modelRef("hf:org/repo, hf:org/repo:Q4_K_M, hf:org/repo/path/file.gguf or file:/abs/path"),
  revision: t.Optional(Field.revision()),
});
export type DownloadRequest = Static<typeof DownloadRequest>;

/** DELETE /v1/models?model_ref=…&revision=… */
export const ModelQuery = t.Object({ model_ref: Field.modelRef(), revision: t.Optional(Field.revision()) });
export type ModelQuery = Static<typeof ModelQuery>;

export const ProgressEvent = t.Union([
  t.Object({
    stage: t.Literal("downloading"),
    bytes_downloaded: t.Integer(),
    bytes_total: t.Integer(),
    speed_mbps: t.Number({ description: "megabytes (10^6 bytes) per second over the last seconds" }),
    file: t.Optional(t.String()),
    files_done: t.Optional(t.Integer()),
    files_total: t.Optional(t.Integer()),
    phase: t.Optional(t.String({ description: "planning | downloading | verifying" })),
  }),
  t.Object({ stage: t.Literal("complete"), local_path: t.String() }),
  t.Object({ stage: t.Literal("error"), message: t.String(), code: t.String() }),
]);
export type ProgressEvent = Static<typeof ProgressEvent>;

export const JobState = t.Union([
  t.Literal("planning"),
  t.Literal("downloading"),
  t.Literal("complete"),
  t.Literal("error"),
  t.Literal("cancelled"),
]);
export type JobState = Static<typeof JobState>;

export const DownloadJobInfo = t.Object({
  id: t.String(),
  model_ref: t.String(),
  revision: t.String(),
  state: JobState,
  commit: Nullable(t.String()),
  bytes_downloaded: t.Integer(),
  bytes_total: t.Integer(),
  files_done: t.Integer(),
  files_total: t.Integer(),
  speed_mbps: t.Number(),
  started_at: t.Integer({ description: "unix ms" }),
  finished_at: Nullable(t.Integer({ description: "unix ms" })),
  local_path: Nullable(t.String()),
  error: Nullable(t.Object({ code: t.String(), message: t.String() })),
  subscribers: t.Integer(),
  last_event_id: t.Integer(),
});
export type DownloadJobInfo = Static<typeof DownloadJobInfo>;

/** POST /v1/models/download: upstream `{download_id, local_path}` plus the hive's `model_ref`, `joined`. */
export const DownloadAnswer = t.Object({
  download_id: t.String({ description: '"cached" when the model is already in the catalog' }),
  local_path: t.Union([t.String(), t.Null()]),
  model_ref: t.String(),
  joined: t.Boolean({ description: "true when this request joined a download already running" }),
});
export type DownloadAnswer = Static<typeof DownloadAnswer>;

export const DownloadList = t.Object({ downloads: t.Array(DownloadJobInfo) });

/** A catalog entry as GET /v1/models lists it: with its memory estimate at the default context. */
export const ListedModel = t.Composite([
  CatalogEntry,
  t.Object({
    memory_estimate_bytes: t.Union([t.Integer(), t.Null()], {
      description: "hive addition: the memory a worker of this model needs at the default context (weights + KV cache + overhead; see GET /v1/capacity for a device); null when it cannot be estimated",
    }),
  }),
]);
export type ListedModel = Static<typeof ListedModel>;

export const ModelList = t.Object({ models: t.Array(ListedModel) });

export const RemovedModel = t.Object({ model_ref: t.String(), removed: t.Literal(true), freed_bytes: t.Integer() });
export type RemovedModel = Static<typeof RemovedModel>;
