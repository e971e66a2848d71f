/**
 * Deleting a downloaded model from the HF cache layout: its snapshot entries go, and each blob goes
 * only when no snapshot of the repo (another revision, another quant, the hf CLI's) still links to it.
 */
import { lstatSync, readdirSync, readlinkSync, rmSync, rmdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import type { CatalogEntry } from "../model-catalog/catalog.ts";
import { isUnder } from "../../shared/input-validation.ts";

/** Every blob path that a symlink under `snapshotsDir` points to. */
function linkedBlobs(snapshotsDir: string): Set<string> {
  const out = new Set<string>();
  const walk = (dir: string) => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isSymbolicLink()) out.add(resolve(dirname(p), readlinkSync(p)));
    }
  };
  walk(snapshotsDir);
  return out;
}

/** Remove empty directories from `dir` up to (not including) `stop`. */
function pruneEmptyDirs(dir: string, stop: string): void {
  let d = dir;
  while (isUnder(stop, d) && d !== resolve(stop)) {
    try {
      rmdirSync(d);
    } catch {
      return; // not empty (or gone)
    }
    d = dirname(d);
  }
}

/**
 * Delete the files of an hf: catalog entry that live under `modelsDir`. Returns the bytes freed.
 * Files outside `modelsDir` (file: models) are never touched.
 */
export function removeModelFiles(modelsDir: string, entry: CatalogEntry): number {
  let freed = 0;
  const blobs: string[] = [];
  for (const f of entry.files) {
    if (!isUnder(modelsDir, f.local_path)) continue;
    try {
      if (lstatSync(f.local_path).isSymbolicLink()) rmSync(f.local_path, { force: true });
    } catch {
      // already gone
    }
    if (f.blob_path && isUnder(modelsDir, f.blob_path)) blobs.push(resolve(f.blob_path));
    pruneEmptyDirs(dirname(f.local_path), modelsDir);
  }
  // A blob may be shared by other snapshots: only unreferenced ones are deleted.
  const snapshotsDirs = new Set(blobs.map((b) => join(dirname(dirname(b)), "snapshots")));
  const stillLinked = new Set<string>();
  for (const s of snapshotsDirs) for (const b of linkedBlobs(s)) stillLinked.add(b);
  for (const blob of new Set(blobs)) {
    if (stillLinked.has(blob)) continue;
    try {
      freed += lstatSync(blob).size;
      rmSync(blob, { force: true });
    } catch {
      // already gone
    }
  }
  return freed;
}
