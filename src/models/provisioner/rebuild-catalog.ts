/**
 * Rebuilding a fresh catalog from the models dir (the HF cache layout) after a damaged models.db
 * was moved aside. No network, no hashing: a blob in the cache was verified before it was renamed
 * into place (by us or by the hf CLI), so a stat of each file is enough.
 *
 * What can be known from disk alone is registered: every complete GGUF model (one file, or a
 * complete split set) of every snapshot, under its exact-file ref `hf:<org>/<repo>/<path>` at each
 * revision whose refs/<revision> names that snapshot (the commit itself when no ref does).
 * What cannot be known is left out: which ref a model was asked for (`hf:org/repo` or
 * `hf:org/repo:Q4_K_M` depend on the hub's file list), safetensors sets, and `file:` models. Those
 * return on their next download or spawn request, with the blobs already on disk reused.
 */
import { readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import type { ModelCatalog } from "../model-catalog/catalog.ts";
import { isCommitSha, parseModelRef } from "../model-catalog/model-ref.ts";
import { errorMessage } from "../../shared/errors.ts";
import type { Logger } from "../../shared/logger.ts";
import { silentLogger } from "../../shared/logger.ts";
import { HfCacheRepo } from "./hf-cache.ts";
import type { RemoteFile } from "./hub-client.ts";
import { isGguf, selectFiles, type Selection } from "./select.ts";

/** Register what the cache holds; returns the registered refs (`ref` or `ref@revision`), sorted. */
export function rebuildCatalogFromCache(catalog: ModelCatalog, modelsDir: string, logger: Logger = silentLogger): string[] {
  const registered: string[] = [];
  for (const repo of cachedRepos(modelsDir)) {
    let cache: HfCacheRepo;
    try {
      cache = new HfCacheRepo(modelsDir, repo);
    } catch {
      continue;
    }
    const revisionsOf = refsByCommit(cache);
    for (const commit of listDir(cache.snapshotsDir).filter(isCommitSha)) {
      const files = cache.snapshotFiles(commit) ?? [];
      for (const selection of ggufModels(repo, files)) {
        const modelRef = `hf:${repo}/${selection.primary}`;
        try {
          parseModelRef(modelRef); // a file name no model_ref can spell is skipped
        } catch {
          continue;
        }
        for (const revision of revisionsOf.get(commit) ?? [commit]) {
          try {
            catalog.register({
              modelRef,
              revision,
              commit,
              local_path: cache.snapshotPath(commit, selection.primary!),
              format: selection.format,
              quantization: selection.quantization,
              files: cache.catalogFiles(commit, selection.files),
              metadata: { repo, selected_by: "file", primary_file: selection.primary, rebuilt: true },
            });
            registered.push(revision === "main" ? modelRef : `${modelRef}@${revision}`);
          } catch (e) {
            logger.warn("could not re-register a cached model", { model_ref: modelRef, revision, error: errorMessage(e) });
          }
        }
      }
    }
  }
  return registered.sort();
}

/** `models--{org}--{repo}` folders (org and repo never contain "--"). */
function cachedRepos(modelsDir: string): string[] {
  const out: string[] = [];
  for (const name of listDir(modelsDir)) {
    const parts = name.split("--");
    if (parts.length === 3 && parts[0] === "models" && parts[1] && parts[2]) out.push(`${parts[1]}/${parts[2]}`);
  }
  return out;
}

/** commit → the revisions (branch/tag names, possibly with '/') whose ref file names it. */
function refsByCommit(cache: HfCacheRepo): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const walk = (dir: string, prefix: string, depth: number) => {
    if (depth > 8) return;
    for (const name of listDir(dir)) {
      const full = join(dir, name);
      const revision = prefix ? `${prefix}/${name}` : name;
      try {
        if (statSync(full).isDirectory()) {
          walk(full, revision, depth + 1);
          continue;
        }
      } catch {
        continue;
      }
      const commit = cache.readRef(revision);
      if (commit) out.set(commit, [...(out.get(commit) ?? []), revision].sort());
    }
  };
  walk(cache.refsDir, "", 0);
  return out;
}

/** Each complete GGUF model of a snapshot, as the exact-file selection would pick it. */
function ggufModels(repo: string, files: RemoteFile[]): Selection[] {
  const byPrimary = new Map<string, Selection>();
  for (const f of files) {
    if (!isGguf(f.path)) continue;
    try {
      const s = selectFiles(repo, { kind: "file", path: f.path }, files, []);
      if (s.primary) byPrimary.set(s.primary, s);
    } catch {
      // an incomplete split set: not a model yet
    }
  }
  return [...byPrimary.values()];
}

function listDir(dir: string): string[] {
  try {
    return readdirSync(dir).sort();
  } catch {
    return [];
  }
}
