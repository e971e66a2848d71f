/**
 * Planning a download: an `hf:` ref at a revision → the commit and the files to fetch, with their
 * places in the HF cache. The hub is asked (2+ API calls); when it is unreachable, a complete
 * snapshot already in the cache is used instead (the plan is then `offline`).
 */
import { isHiveError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/logger.ts";
import { isCommitSha, type HfModelRef } from "../model-catalog/model-ref.ts";
import type { HfCacheRepo } from "./hf-cache.ts";
import type { HubClient, RemoteFile } from "./hub-client.ts";
import { selectFiles, type Selection } from "./select.ts";

export interface PlannedFile {
  remote: RemoteFile;
  blobPath: string;
  snapshotPath: string;
}

export interface ModelPlan {
  modelRef: string;
  revision: string;
  repo: string;
  commit: string;
  /** True when the hub was not reachable and the plan comes from the local cache. */
  offline: boolean;
  selection: Selection;
  files: PlannedFile[];
  bytesTotal: number;
  localPath: string;
  cache: HfCacheRepo;
}

export interface RevisionListing {
  commit: string;
  files: RemoteFile[];
  offline: boolean;
}

/** The commit and files of `revision`: from the hub, or offline from the cache when the hub is unreachable. */
export async function listRevision(
  client: HubClient,
  cache: HfCacheRepo,
  revision: string,
  signal: AbortSignal | undefined,
  logger: Logger,
): Promise<RevisionListing> {
  const repo = cache.repo;
  try {
    const commit = (await client.resolveRevision(repo, revision, signal)).commit;
    return { commit, files: await client.listFiles(repo, commit, signal), offline: false };
  } catch (e) {
    if (!(isHiveError(e) && e.code === "HUB_UNREACHABLE")) throw e;
    const local = cachedSnapshot(cache, revision);
    if (!local) throw e;
    logger.warn("hub unreachable; using the cached snapshot", { repo, revision, commit: local.commit, error: e.message });
    return { ...local, offline: true };
  }
}

function cachedSnapshot(cache: HfCacheRepo, revision: string): { commit: string; files: RemoteFile[] } | null {
  const commit = isCommitSha(revision) ? revision : cache.readRef(revision);
  if (!commit) return null;
  const files = cache.snapshotFiles(commit);
  return files && files.length > 0 ? { commit, files } : null;
}

/** Pick the files the ref asks for (select.ts) and place them in the cache. */
export function buildPlan(ref: HfModelRef, revision: string, cache: HfCacheRepo, listing: RevisionListing, quantPreference: string[]): ModelPlan {
  const { commit, files, offline } = listing;
  const selection = selectFiles(ref.repo, ref.selector, files, quantPreference);
  const planned = selection.files.map((remote) => ({
    remote,
    snapshotPath: cache.snapshotPath(commit, remote.path), // 400 on traversal in a hub file name
    blobPath: cache.blobPath(remote.etag),
  }));
  return {
    modelRef: ref.modelRef,
    revision,
    repo: ref.repo,
    commit,
    offline,
    selection,
    files: planned,
    bytesTotal: planned.reduce((s, f) => s + f.remote.size, 0),
    localPath: selection.primary ? cache.snapshotPath(commit, selection.primary) : cache.snapshotDir(commit),
    cache,
  };
}
