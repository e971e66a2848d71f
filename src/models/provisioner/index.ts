export { Provisioner, DEFAULTS as PROVISIONER_DEFAULTS } from "./provisioner.ts";
export type {
  ProvisionerOptions,
  ModelPlan,
  PlannedFile,
  ProvisionProgress,
  ProvisionResult,
  ProvisionOptions,
  StatfsLike,
} from "./provisioner.ts";
export { HubClient, DEFAULT_HF_ENDPOINT, encodeRepoPath } from "./hub-client.ts";
export type { HubClientOptions, RemoteFile, RepoRevision, HubFileHeaders, FetchFn } from "./hub-client.ts";
export { HfCacheRepo, repoFolderName } from "./hf-cache.ts";
export { selectFiles, detectQuant, quantMatcher, DEFAULT_QUANT_PREFERENCE, SAFETENSORS_COMPANIONS } from "./select.ts";
export type { Selection, ModelFormat } from "./select.ts";
export { parseRetryAfter, backoffMs, TransientError, DEFAULT_RETRY_POLICY } from "./retry.ts";
export type { RetryPolicy } from "./retry.ts";
export { downloadBlob, hashFile, expectedDigest } from "./download-blob.ts";
