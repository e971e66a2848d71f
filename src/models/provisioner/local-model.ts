/**
 * local-model: describe a `file:` model (one file or a directory) for the catalog, confined to the
 * allowed roots.
 *
 * Every entry is judged by its real path (all symlinks resolved) against the real paths of the
 * roots: an entry that resolves outside is skipped and logged, never listed. The directory walk is
 * asynchronous (node:fs/promises, so other requests are served while it runs), never enters a
 * directory twice (visited by real path: `l -> .` loops and diamonds end there), and is bounded in
 * depth, entries and time; past a bound it fails with 413 MODEL_DIR_TOO_LARGE rather than
 * registering part of a model.
 */
import * as fsp from "node:fs/promises";
import { basename, join, relative, resolve } from "node:path";
import type { CatalogFile, RegisterInput } from "../model-catalog/catalog.ts";
import { parseModelRef } from "../model-catalog/model-ref.ts";
import { HiveError } from "../../shared/errors.ts";
import { isUnder, validatePathUnderRoots } from "../../shared/input-validation.ts";
import type { Logger } from "../../shared/logger.ts";
import { detectQuant } from "./select.ts";

export interface WalkEntry {
  name: string;
  isDirectory(): boolean;
  isFile(): boolean;
  isSymbolicLink(): boolean;
}

/** The file system calls the walk makes (tests pass a gated one). */
export interface WalkFs {
  readdir(dir: string): Promise<WalkEntry[]>;
  realpath(path: string): Promise<string>;
  stat(path: string): Promise<{ size: number; isFile(): boolean; isDirectory(): boolean }>;
}

export const nodeWalkFs: WalkFs = {
  readdir: (dir) => fsp.readdir(dir, { withFileTypes: true }),
  realpath: (path) => fsp.realpath(path),
  stat: (path) => fsp.stat(path),
};

export interface WalkLimits {
  /** Directories below the model directory (its own entries are at depth 1). */
  maxDepth: number;
  /** Directory entries looked at, all directories together. */
  maxEntries: number;
  /** Wall time of the whole walk. */
  timeoutMs: number;
}

export const DEFAULT_WALK_LIMITS: WalkLimits = { maxDepth: 16, maxEntries: 10_000, timeoutMs: 10_000 };

export interface LocalModelOptions {
  /** Where file: models may live (the models dir and paths.allowed_model_roots). */
  roots: string[];
  limits: WalkLimits;
  fs: WalkFs;
  now: () => number;
  logger: Logger;
}

/** How many skipped paths a log line names (the count is always complete). */
const LOGGED_PATHS = 20;

/** Describe a `file:` model. Errors: 400 INVALID_INPUT, 404 MODEL_NOT_FOUND, 413 MODEL_DIR_TOO_LARGE. */
export async function describeLocalModel(modelRef: string, o: LocalModelOptions): Promise<RegisterInput> {
  const parsed = parseModelRef(modelRef);
  if (parsed.provider !== "file") throw new HiveError(400, "INVALID_INPUT", `registerLocal() takes file: refs, got "${modelRef}"`);
  const path = validatePathUnderRoots(parsed.path, o.roots, "model_ref");
  let real: string;
  try {
    real = await o.fs.realpath(path);
  } catch {
    throw new HiveError(404, "MODEL_NOT_FOUND", `no file or directory at ${path}`, { path });
  }
  const realRoots = await Promise.all(o.roots.map((r) => o.fs.realpath(r).catch(() => resolve(r))));
  if (!realRoots.some((r) => isUnder(r, real))) {
    throw new HiveError(400, "INVALID_INPUT", `model_ref ${path} resolves to ${real}, outside the allowed model roots`, {
      field: "model_ref",
    });
  }
  const st = await o.fs.stat(real);
  let files: CatalogFile[];
  if (st.isFile()) {
    files = [{ path: basename(path), local_path: path, size_bytes: st.size, sha256: null, git_oid: null, blob_path: null }];
  } else if (st.isDirectory()) {
    const walked = await walkModelDir(path, real, realRoots, o);
    if (walked.escaped.length > 0) {
      o.logger.warn("file: model entries outside the allowed model roots were skipped", {
        model_ref: parsed.modelRef,
        count: walked.escaped.length,
        paths: walked.escaped.slice(0, LOGGED_PATHS),
      });
    }
    files = walked.files;
    if (files.length === 0) throw new HiveError(404, "MODEL_NOT_FOUND", `directory ${path} holds no files`, { path });
  } else {
    throw new HiveError(400, "INVALID_INPUT", `${path} is neither a file nor a directory`, { field: "model_ref" });
  }
  const lower = path.toLowerCase();
  const format = lower.endsWith(".gguf")
    ? "gguf"
    : files.some((f) => f.path.toLowerCase().endsWith(".safetensors"))
      ? "safetensors"
      : files.some((f) => f.path.toLowerCase().endsWith(".gguf"))
        ? "gguf"
        : "other";
  return {
    modelRef: parsed.modelRef,
    local_path: path,
    format,
    quantization: detectQuant(basename(path)),
    metadata: { source: "file" },
    files,
  };
}

function tooLarge(message: string, details: Record<string, unknown>): HiveError {
  return new HiveError(413, "MODEL_DIR_TOO_LARGE", message, details);
}

/**
 * The regular files under `top` (hidden names skipped). `realTop` is its real path, already checked
 * against the roots. A directory is read by its real path, so an entry that is not a symlink is
 * inside it by construction; only symlinks need resolving and checking.
 */
async function walkModelDir(
  top: string,
  realTop: string,
  realRoots: string[],
  o: LocalModelOptions,
): Promise<{ files: CatalogFile[]; escaped: string[] }> {
  const { maxDepth, maxEntries, timeoutMs } = o.limits;
  const deadline = o.now() + timeoutMs;
  const checkTime = () => {
    if (o.now() > deadline) {
      throw tooLarge(`walking ${top} took longer than ${timeoutMs / 1000} s; name one file with file:<path>`, {
        path: top,
        limit: "time",
        timeout_s: timeoutMs / 1000,
      });
    }
  };
  const files: CatalogFile[] = [];
  const escaped: string[] = [];
  const visited = new Set<string>([realTop]);
  const stack: Array<{ shown: string; real: string; depth: number }> = [{ shown: top, real: realTop, depth: 0 }];
  let entries = 0;
  while (stack.length > 0) {
    const dir = stack.pop()!;
    checkTime();
    let list: WalkEntry[];
    try {
      list = await o.fs.readdir(dir.real);
    } catch {
      continue; // removed or unreadable meanwhile
    }
    checkTime();
    for (const ent of list) {
      if (++entries > maxEntries) {
        throw tooLarge(`${top} has more than ${maxEntries} entries; name one file with file:<path> or split the directory`, {
          path: top,
          limit: "entries",
          max_entries: maxEntries,
        });
      }
      if (ent.name.startsWith(".")) continue;
      const shown = join(dir.shown, ent.name);
      let real = join(dir.real, ent.name);
      let isDir = ent.isDirectory();
      let isFile = ent.isFile();
      let size = -1;
      if (ent.isSymbolicLink()) {
        try {
          real = await o.fs.realpath(real);
        } catch {
          continue; // dangling
        }
        if (!realRoots.some((r) => isUnder(r, real))) {
          escaped.push(shown);
          continue;
        }
        try {
          const st = await o.fs.stat(real);
          isDir = st.isDirectory();
          isFile = st.isFile();
          size = st.size;
        } catch {
          continue;
        }
        checkTime();
      }
      if (isDir) {
        if (visited.has(real)) continue; // a loop, or a directory already walked under another name
        if (dir.depth + 1 > maxDepth) {
          throw tooLarge(`${top} is nested deeper than ${maxDepth} directories`, { path: top, limit: "depth", max_depth: maxDepth });
        }
        visited.add(real);
        stack.push({ shown, real, depth: dir.depth + 1 });
      } else if (isFile) {
        if (size < 0) {
          try {
            size = (await o.fs.stat(real)).size;
          } catch {
            continue;
          }
          checkTime();
        }
        files.push({ path: relative(top, shown), local_path: shown, size_bytes: size, sha256: null, git_oid: null, blob_path: null });
      }
    }
  }
  return { files, escaped };
}
