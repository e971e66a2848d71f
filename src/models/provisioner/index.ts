export { Provisioner } from "./provisioner.ts";
export type {
  ProvisionerOptions,
  ProvisionerSettings,
  ModelPlan,
  PlannedFile,
  ProvisionProgress,
  ProvisionResult,
  ProvisionOptions,
  StatfsLike,
} from "./provisioner.ts";
export { HubClient, encodeRepoPath } from "./hub-client.ts";
export type { HubClientOptions, RemoteFile, RepoRevision, HubFileHeaders, FetchFn } from "./hub-client.ts";
export { HfCacheRepo, repoFolderName } from "./hf-cache.ts";
export { selectFiles, detectQuant, quantMatcher, SAFETENSORS_COMPANIONS } from "./select.ts";
export type { Selection, ModelFormat } from "./select.ts";
export { parseRetryAfter, backoffMs, TransientError } from "./retry.ts";
export type { RetryPolicy } from "./retry.ts";
export { downloadBlob } from "./blob/transfer.ts";
export { hashFile, expectedDigest } from "./blob/digest.ts";
