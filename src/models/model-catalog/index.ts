export { ModelCatalog } from "./catalog.ts";
export type { CatalogEntry, CatalogFile, CatalogHealth, DiskCheck, ModelCatalogOptions, RegisterInput } from "./catalog.ts";
export { openCatalog } from "./open.ts";
export { migrate, schemaVersion, LATEST_SCHEMA_VERSION, UPSTREAM_MODELS_DDL, ADDED_MODEL_COLUMNS } from "./schema.ts";
export {
  parseModelRef,
  validateRevision,
  catalogKey,
  canonicalFilePath,
  optionalRevision,
  isCommitSha,
  DEFAULT_REVISION,
} from "./model-ref.ts";
export type { ParsedModelRef, HfModelRef, FileModelRef, HfSelector } from "./model-ref.ts";
