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
import type { FileModelRef } from "../model-catalog/model-ref.ts";
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
export async function describeLocalModel(parsed: FileModelRef, o: LocalModelOptions): Promise<RegisterInput> {
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

interface WalkDir {
  /** The path as the model_ref names it (what the catalog records). */
  shown: string;
  /** Its real path (what is read). */
  real: string;
  depth: number;
}

/**
 * The regular files under `top` (hidden names skipped). `realTop` is its real path, already checked
 * against the roots. A directory is read by its real path, so an entry that is not a symlink is
 * inside it by construction; only symlinks need resolving and checking.
 */
function walkModelDir(top: string, realTop: string, realRoots: string[], o: LocalModelOptions): Promise<{ files: CatalogFile[]; escaped: string[] }> {
  return new ModelDirWalk(top, realRoots, o).run(realTop);
}

/** What an entry is, symlinks followed; size -1 when not known yet. */
interface LinkTarget {
  real: string;
  isDir: boolean;
  isFile: boolean;
  size: number;
}

class ModelDirWalk {
  readonly files: CatalogFile[] = [];
  /** Entries whose symlinks lead outside the roots: skipped, and logged by the caller. */
  readonly escaped: string[] = [];
  private readonly visited = new Set<string>();
  private readonly stack: WalkDir[] = [];
  private readonly deadline: number;
  private entries = 0;

  constructor(
    private readonly top: string,
    private readonly realRoots: string[],
    private readonly o: LocalModelOptions,
  ) {
    this.deadline = o.now() + o.limits.timeoutMs;
  }

  async run(realTop: string): Promise<{ files: CatalogFile[]; escaped: string[] }> {
    this.visited.add(realTop);
    this.stack.push({ shown: this.top, real: realTop, depth: 0 });
    while (this.stack.length > 0) {
      const dir = this.stack.pop()!;
      this.checkTime();
      let list: WalkEntry[];
      try {
        list = await this.o.fs.readdir(dir.real);
      } catch {
        continue; // removed or unreadable meanwhile
      }
      this.checkTime();
      for (const ent of list) await this.visit(dir, ent);
    }
    return { files: this.files, escaped: this.escaped };
  }

  private async visit(dir: WalkDir, ent: WalkEntry): Promise<void> {
    if (++this.entries > this.o.limits.maxEntries) {
      const max = this.o.limits.maxEntries;
      throw tooLarge(`${this.top} has more than ${max} entries; name one file with file:<path> or split the directory`, { path: this.top, limit: "entries", max_entries: max });
    }
    if (ent.name.startsWith(".")) return;
    const shown = join(dir.shown, ent.name);
    const real = join(dir.real, ent.name);
    const target = ent.isSymbolicLink() ? await this.followLink(shown, real) : { real, isDir: ent.isDirectory(), isFile: ent.isFile(), size: -1 };
    if (!target) return;
    if (target.isDir) this.enter(dir, shown, target.real);
    else if (target.isFile) await this.addFile(shown, target.real, target.size);
  }

  /** Where a symlink leads, when it resolves inside the roots; null (skipped) otherwise. */
  private async followLink(shown: string, link: string): Promise<LinkTarget | null> {
    let real: string;
    try {
      real = await this.o.fs.realpath(link);
    } catch {
      return null; // dangling
    }
    if (!this.realRoots.some((r) => isUnder(r, real))) {
      this.escaped.push(shown);
      return null;
    }
    let st: Awaited<ReturnType<WalkFs["stat"]>>;
    try {
      st = await this.o.fs.stat(real);
    } catch {
      return null;
    }
    this.checkTime();
    return { real, isDir: st.isDirectory(), isFile: st.isFile(), size: st.size };
  }

  private enter(dir: WalkDir, shown: string, real: string): void {
    if (this.visited.has(real)) return; // a loop, or a directory already walked under another name
    const max = this.o.limits.maxDepth;
    if (dir.depth + 1 > max) throw tooLarge(`${this.top} is nested deeper than ${max} directories`, { path: this.top, limit: "depth", max_depth: max });
    this.visited.add(real);
    this.stack.push({ shown, real, depth: dir.depth + 1 });
  }

  private async addFile(shown: string, real: string, knownSize: number): Promise<void> {
    let size = knownSize;
    if (size < 0) {
      try {
        size = (await this.o.fs.stat(real)).size;
      } catch {
        return;
      }
      this.checkTime();
    }
    this.files.push({ path: relative(this.top, shown), local_path: shown, size_bytes: size, sha256: null, git_oid: null, blob_path: null });
  }

  private checkTime(): void {
    if (this.o.now() <= this.deadline) return;
    const timeoutMs = this.o.limits.timeoutMs;
    throw tooLarge(`walking ${this.top} took longer than ${timeoutMs / 1000} s; name one file with file:<path>`, {
      path: this.top,
      limit: "time",
      timeout_s: timeoutMs / 1000,
    });
  }
}
