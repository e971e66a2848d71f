/** Catalog and download shapes as TypeBox schemas: the types below derive from them. */
import { t, type Static } from "../../shared/schema.ts";

const Nullable = <T extends Parameters<typeof t.Union>[0][number]>(s: T) => t.Union([s, t.Null()]);

export const CatalogFile = t.Object({
  path: t.String({ description: "path inside the repo (hf:) or relative to the model directory (file:)" }),
  local_path: t.String({ description: "absolute path a reader opens (for hf: the snapshot symlink)" }),
  size_bytes: t.Integer(),
  sha256: Nullable(t.String({ description: "sha256 hex of LFS files; null for small git files or file: models" })),
  git_oid: Nullable(t.String({ description: "git blob sha1 of non-LFS files" })),
  blob_path: Nullable(t.String({ description: "the blob the snapshot entry points to (HF cache layout)" })),
});
export type CatalogFile = Static<typeof CatalogFile>;

export const CatalogEntry = t.Object({
  model_ref: t.String(),
  provider: t.String(),
  reference: t.String({ description: "upstream key column; `<reference>@<revision>` for a non-default revision" }),
  revision: Nullable(t.String()),
  commit: Nullable(t.String()),
  local_path: t.String({ description: "what a worker gets as --model: the (first) GGUF file or the snapshot directory" }),
  size_bytes: t.Integer(),
  downloaded_at: t.Integer({ description: "unix seconds (upstream convention)" }),
  format: Nullable(t.String()),
  quantization: Nullable(t.String()),
  metadata: t.Record(t.String(), t.Unknown()),
  last_used_at: Nullable(t.Integer({ description: "unix seconds" })),
  files: t.Array(CatalogFile),
});
export type CatalogEntry = Static<typeof CatalogEntry>;

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
