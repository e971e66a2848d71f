/** Catalog shapes as TypeBox schemas: the types below derive from them. */
import { Nullable, t, type Static } from "../../shared/schema.ts";


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
