/**
 * The Hugging Face cache layout (the one `huggingface_hub` / the `hf` CLI use), so both tools
 * share files:
 *
 *   <cache>/models--{org}--{repo}/blobs/<sha256 | git oid>
 *   <cache>/models--{org}--{repo}/snapshots/<commit>/<path>   relative symlink → ../../blobs/<etag>
 *   <cache>/models--{org}--{repo}/refs/<revision>             the commit, no newline
 *
 * Our own partial downloads live beside the blobs as `<etag>.rbee-partial` (+ `.rbee-partial.json`
 * holding per-part resume state). They are deliberately NOT named `.incomplete`: the hf CLI resumes
 * an `.incomplete` file by its length, and ours is written in parallel parts with holes.
 */
import {
  closeSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  renameSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join, relative } from "node:path";
import { HiveError } from "../../shared/errors.ts";
import { resolveInside } from "../../shared/input-validation.ts";
import type { CatalogFile } from "../model-catalog/catalog.ts";
import type { RemoteFile } from "./hub-client.ts";

const ETAG = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;
const COMMIT = /^[0-9a-f]{40}$/;

export function repoFolderName(repo: string): string {
  return `models--${repo.replace("/", "--")}`;
}

let tmpCounter = 0;
function tmpName(path: string): string {
  return `${path}.tmp-${process.pid}-${++tmpCounter}`;
}

/** Best-effort fsync of a directory (makes a rename durable). */
export function fsyncDir(dir: string): void {
  try {
    const fd = openSync(dir, "r");
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    /* not supported everywhere */
  }
}

export class HfCacheRepo {
  readonly dir: string;
  readonly blobsDir: string;
  readonly snapshotsDir: string;
  readonly refsDir: string;

  constructor(
    readonly cacheDir: string,
    readonly repo: string,
  ) {
    this.dir = resolveInside(cacheDir, repoFolderName(repo), "repo");
    this.blobsDir = join(this.dir, "blobs");
    this.snapshotsDir = join(this.dir, "snapshots");
    this.refsDir = join(this.dir, "refs");
  }

  blobPath(etag: string): string {
    if (!ETAG.test(etag)) throw new HiveError(502, "HUB_BAD_RESPONSE", `invalid blob id "${etag}"`);
    return join(this.blobsDir, etag);
  }

  partialPath(etag: string): string {
    return this.blobPath(etag) + ".rbee-partial";
  }

  partialStatePath(etag: string): string {
    return this.blobPath(etag) + ".rbee-partial.json";
  }

  snapshotDir(commit: string): string {
    if (!COMMIT.test(commit)) throw new HiveError(502, "HUB_BAD_RESPONSE", `invalid commit "${commit}"`);
    return join(this.snapshotsDir, commit);
  }

  /** Snapshot path of a repo file; rejects traversal in hub-provided names (400 INVALID_INPUT). */
  snapshotPath(commit: string, path: string): string {
    return resolveInside(this.snapshotDir(commit), path, "file name from the hub");
  }

  readRef(revision: string): string | null {
    try {
      const v = readFileSync(resolveInside(this.refsDir, revision, "revision"), "utf8").trim();
      return COMMIT.test(v) ? v : null;
    } catch {
      return null;
    }
  }

  /** Atomically write refs/<revision> = commit. */
  writeRef(revision: string, commit: string): void {
    const path = resolveInside(this.refsDir, revision, "revision");
    if (this.readRef(revision) === commit) return;
    mkdirSync(dirname(path), { recursive: true });
    const tmp = tmpName(path);
    writeFileSync(tmp, commit);
    renameSync(tmp, path);
  }

  /** Point snapshots/<commit>/<path> at blobs/<etag> with a relative symlink (atomic replace). */
  linkSnapshot(commit: string, path: string, etag: string): string {
    const link = this.snapshotPath(commit, path);
    const target = relative(dirname(link), this.blobPath(etag));
    try {
      if (lstatSync(link).isSymbolicLink() && readlinkSync(link) === target) return link;
    } catch {
      /* absent */
    }
    mkdirSync(dirname(link), { recursive: true });
    const tmp = tmpName(link);
    symlinkSync(target, tmp);
    renameSync(tmp, link);
    return link;
  }

  /** Size of a complete blob, or null when absent. */
  blobSize(etag: string): number | null {
    try {
      const st = statSync(this.blobPath(etag));
      return st.isFile() ? st.size : null;
    } catch {
      return null;
    }
  }

  /**
   * The files of a snapshot as the cache holds them (for working offline): each symlink's target
   * names its blob. Regular files (a `--local-dir`-style copy) are skipped: no id to verify against.
   */
  snapshotFiles(commit: string): RemoteFile[] | null {
    const root = this.snapshotDir(commit);
    try {
      if (!statSync(root).isDirectory()) return null;
    } catch {
      return null;
    }
    const out: RemoteFile[] = [];
    const walk = (dir: string, depth: number) => {
      if (depth > 16) return;
      for (const ent of readdirSync(dir, { withFileTypes: true })) {
        const full = join(dir, ent.name);
        if (ent.isDirectory()) walk(full, depth + 1);
        else if (ent.isSymbolicLink()) {
          const etag = basename(readlinkSync(full));
          if (!ETAG.test(etag)) continue;
          const size = this.blobSize(etag);
          if (size === null) continue;
          out.push({
            path: relative(root, full).split("\\").join("/"),
            size,
            sha256: etag.length === 64 ? etag : null,
            gitOid: etag.length === 40 ? etag : null,
            etag,
          });
        }
      }
    };
    walk(root, 0);
    return out;
  }

  /** Catalog rows of a snapshot's files: the snapshot entry a reader opens, and the blob behind it. */
  catalogFiles(commit: string, files: RemoteFile[]): CatalogFile[] {
    return files.map((f) => ({
      path: f.path,
      local_path: this.snapshotPath(commit, f.path),
      size_bytes: f.size,
      sha256: f.sha256,
      git_oid: f.gitOid,
      blob_path: this.blobPath(f.etag),
    }));
  }

  removePartial(etag: string): void {
    for (const p of [this.partialPath(etag), this.partialStatePath(etag), `${this.partialStatePath(etag)}.tmp`]) {
      try {
        unlinkSync(p);
      } catch {
        /* absent */
      }
    }
  }
}
