export { ModelCatalog } from "./catalog.ts";
export type { CatalogEntry, CatalogFile, DiskCheck, ModelCatalogOptions, RegisterInput } from "./catalog.ts";
export { migrate, schemaVersion, LATEST_SCHEMA_VERSION, UPSTREAM_MODELS_DDL, ADDED_MODEL_COLUMNS } from "./schema.ts";
export {
  parseModelRef,
  validateRevision,
  catalogKey,
  isCommitSha,
  DEFAULT_REVISION,
} from "./model-ref.ts";
export type { ParsedModelRef, HfSelector } from "./model-ref.ts";
