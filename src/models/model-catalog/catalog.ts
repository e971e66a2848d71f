/**
 * model-catalog: which models are on this host, on bun:sqlite.
 *
 * A row exists only for a model whose files are all complete and verified on disk: the
 * provisioner verifies (sha256 / git oid) and then calls `register`, which re-checks every
 * file's presence and size and writes the model row and its file rows in one transaction.
 */
import { Database, SQLiteError } from "bun:sqlite";
import { mkdirSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { HiveError } from "../../shared/errors.ts";
import type { Clock } from "../../shared/clock.ts";
import { systemClock } from "../../shared/clock.ts";
import type { Logger } from "../../shared/logger.ts";
import { silentLogger } from "../../shared/logger.ts";
import { catalogKey } from "./model-ref.ts";
import { migrate } from "./schema.ts";
import type { CatalogEntry, CatalogFile } from "./types.ts";

export { CatalogEntry, CatalogFile } from "./types.ts";

export interface RegisterInput {
  modelRef: string;
  revision?: string;
  commit?: string | null;
  local_path: string;
  format?: string | null;
  quantization?: string | null;
  metadata?: Record<string, unknown>;
  files: CatalogFile[];
  /** Defaults to the sum of the files' sizes. */
  size_bytes?: number;
}

export interface ModelCatalogOptions {
  /** SQLite file; default ":memory:". Parent directories are created. */
  path?: string;
  /** PRAGMA busy_timeout in ms (default 5000). */
  busyTimeoutMs?: number;
  clock?: Clock;
  /** Where SQLite failures at runtime are logged (with the detail the HTTP answer leaves out). */
  logger?: Logger;
}

/** What /v1/health reports about the catalog. */
export type CatalogHealth = { status: "ok" } | { status: "degraded"; reason: string };

export interface DiskCheck {
  ok: boolean;
  /** Human-readable problems, e.g. "model.gguf: missing" or "model.gguf: size 10 != 12". */
  problems: string[];
}

interface ModelRow {
  reference: string;
  provider: string;
  local_path: string;
  size_bytes: number;
  downloaded_at: number;
  revision: string | null;
  commit_sha: string | null;
  format: string | null;
  quantization: string | null;
  metadata_json: string | null;
  last_used_at: number | null;
}

type FileRow = CatalogFile & { reference: string; provider: string };

export class ModelCatalog {
  readonly db: Database;
  readonly path: string;
  private readonly clock: Clock;
  private readonly logger: Logger;
  /** The last failure, until an operation that proves it over succeeds (see guard()). */
  private degraded: { op: "read" | "write"; reason: string } | null = null;

  constructor(opts: ModelCatalogOptions = {}) {
    const path = opts.path ?? ":memory:";
    if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
    this.path = path;
    this.db = new Database(path, { create: true, strict: true });
    this.clock = opts.clock ?? systemClock;
    this.logger = opts.logger ?? silentLogger;
    this.db.run("PRAGMA journal_mode = WAL");
    this.db.run(`PRAGMA busy_timeout = ${Math.max(0, Math.floor(opts.busyTimeoutMs ?? 5000))}`);
    this.db.run("PRAGMA foreign_keys = ON");
    this.db.run("PRAGMA synchronous = NORMAL");
    migrate(this.db);
  }

  /** The entry for a model_ref at a revision (undefined/"main" = the default), or null. */
  get(modelRef: string, revision?: string): CatalogEntry | null {
    return this.guard("read", () => this.read(modelRef, revision));
  }

  private read(modelRef: string, revision?: string): CatalogEntry | null {
    const key = catalogKey(modelRef, revision);
    const row = this.db
      .query("SELECT * FROM models WHERE reference = $reference AND provider = $provider")
      .get({ reference: key.reference, provider: key.provider }) as ModelRow | null;
    if (!row) return null;
    const files = this.db
      .query("SELECT * FROM model_files WHERE reference = $reference AND provider = $provider ORDER BY path")
      .all({ reference: key.reference, provider: key.provider }) as FileRow[];
    return toEntry(row, files);
  }

  list(): CatalogEntry[] {
    return this.guard("read", () => this.readAll());
  }

  private readAll(): CatalogEntry[] {
    const rows = this.db.query("SELECT * FROM models ORDER BY provider, reference").all() as ModelRow[];
    const files = this.db.query("SELECT * FROM model_files ORDER BY path").all() as FileRow[];
    const byKey = new Map<string, FileRow[]>();
    for (const f of files) {
      const k = `${f.provider}\0${f.reference}`;
      const list = byKey.get(k) ?? [];
      list.push(f);
      byKey.set(k, list);
    }
    return rows.map((r) => toEntry(r, byKey.get(`${r.provider}\0${r.reference}`) ?? []));
  }

  /**
   * Record a complete model (replacing an older row for the same key) in one transaction.
   * Every file must exist with its recorded size, else HiveError 500 CATALOG_FILES_INCOMPLETE and
   * nothing is written.
   */
  register(input: RegisterInput): CatalogEntry {
    const key = catalogKey(input.modelRef, input.revision);
    const problems = checkFiles(input.local_path, input.files);
    if (problems.length > 0) {
      throw new HiveError(500, "CATALOG_FILES_INCOMPLETE", `refusing to register ${input.modelRef}: ${problems.join("; ")}`, {
        problems,
      });
    }
    const size = input.size_bytes ?? input.files.reduce((s, f) => s + f.size_bytes, 0);
    const now = Math.floor(this.clock.now() / 1000);
    const write = this.db.transaction(() => {
      this.db.query("DELETE FROM model_files WHERE reference = $reference AND provider = $provider").run(key);
      this.db
        .query(
          `INSERT INTO models (reference, provider, local_path, size_bytes, downloaded_at, revision, commit_sha, format, quantization, metadata_json, last_used_at)
           VALUES ($reference, $provider, $local_path, $size_bytes, $downloaded_at, $revision, $commit_sha, $format, $quantization, $metadata_json, NULL)
           ON CONFLICT (reference, provider) DO UPDATE SET local_path = excluded.local_path, size_bytes = excluded.size_bytes,
             downloaded_at = excluded.downloaded_at, revision = excluded.revision, commit_sha = excluded.commit_sha,
             format = excluded.format, quantization = excluded.quantization, metadata_json = excluded.metadata_json`,
        )
        .run({
          ...key,
          local_path: input.local_path,
          size_bytes: size,
          downloaded_at: now,
          revision: input.revision ?? null,
          commit_sha: input.commit ?? null,
          format: input.format ?? null,
          quantization: input.quantization ?? null,
          metadata_json: JSON.stringify(input.metadata ?? {}),
        });
      const ins = this.db.query(
        `INSERT INTO model_files (reference, provider, path, local_path, size_bytes, sha256, git_oid, blob_path)
         VALUES ($reference, $provider, $path, $local_path, $size_bytes, $sha256, $git_oid, $blob_path)`,
      );
      for (const f of input.files) {
        ins.run({ ...key, ...fileColumns(f) });
      }
    });
    this.guard("write", () => write.immediate());
    return this.get(input.modelRef, input.revision)!;
  }

  /** Remove the row (files on disk are left alone). True when a row was removed. */
  remove(modelRef: string, revision?: string): boolean {
    const key = catalogKey(modelRef, revision);
    return this.guard(
      "write",
      () => this.db.query("DELETE FROM models WHERE reference = $reference AND provider = $provider").run(key).changes > 0,
    );
  }

  /** Set last_used_at to now (spawn calls this). */
  touch(modelRef: string, revision?: string): void {
    const key = catalogKey(modelRef, revision);
    this.guard("write", () =>
      this.db
        .query("UPDATE models SET last_used_at = $now WHERE reference = $reference AND provider = $provider")
        .run({ ...key, now: Math.floor(this.clock.now() / 1000) }),
    );
  }

  /** ok, or degraded with a short reason (no paths, no SQL): the last catalog operation failed. */
  health(): CatalogHealth {
    return this.degraded ? { status: "degraded", reason: this.degraded.reason } : { status: "ok" };
  }

  /**
   * Run one catalog operation; an SQLite failure becomes a stable HiveError (the detail goes to
   * the log) and marks the catalog degraded: a full disk (or an I/O error on a write) is
   * 507 INSUFFICIENT_DISK, anything else 503 CATALOG_UNAVAILABLE. Never a bare 500.
   */
  private guard<T>(op: "read" | "write", fn: () => T): T {
    let value: T;
    try {
      value = fn();
    } catch (e) {
      throw this.failed(op, e);
    }
    // A write that succeeds proves the catalog whole again; a read only clears a read failure
    // (reads keep working on a full disk).
    if (this.degraded && (op === "write" || this.degraded.op === "read")) {
      this.logger.info("model catalog works again", { path: this.path, was: this.degraded.reason });
      this.degraded = null;
    }
    return value;
  }

  private failed(op: "read" | "write", e: unknown): unknown {
    if (!(e instanceof SQLiteError)) return e; // our own HiveErrors, or a bug
    const code = String(e.code ?? "SQLITE_ERROR");
    const diskFull = code === "SQLITE_FULL";
    const ioError = code.startsWith("SQLITE_IOERR");
    this.logger.error(`model catalog ${op} failed`, { path: this.path, code, err: e.message });
    if (diskFull || (ioError && op === "write")) {
      const why = diskFull ? `the disk is full (${code})` : `disk I/O error (${code})`;
      this.degraded = { op, reason: `${op} failed: ${why}` };
      return new HiveError(507, "INSUFFICIENT_DISK", `the model catalog ${this.path} cannot be ${op === "read" ? "read" : "written"}: ${why}; free some space and retry`);
    }
    this.degraded = { op, reason: `${op} failed (${code})` };
    return new HiveError(
      503,
      "CATALOG_UNAVAILABLE",
      `the model catalog ${this.path} cannot be ${op === "read" ? "read" : "written"} (${code}); see the hive log, GET /v1/health shows its state`,
    );
  }

  /** Stat every file of an entry (cheap; no hashing). */
  checkOnDisk(entry: CatalogEntry): DiskCheck {
    const problems = checkFiles(entry.local_path, entry.files);
    return { ok: problems.length === 0, problems };
  }

  /** The entry of a model whose files are all on disk with their recorded sizes, or null. */
  getOnDisk(modelRef: string, revision?: string): CatalogEntry | null {
    const entry = this.get(modelRef, revision);
    return entry && this.checkOnDisk(entry).ok ? entry : null;
  }

  close(): void {
    this.db.close(false);
  }
}

function checkFiles(localPath: string, files: CatalogFile[]): string[] {
  const problems: string[] = [];
  if (files.length === 0) {
    try {
      statSync(localPath);
    } catch {
      problems.push(`${localPath}: missing`);
    }
    return problems;
  }
  for (const f of files) {
    try {
      const st = statSync(f.local_path); // follows the snapshot symlink to the blob
      if (!st.isFile()) problems.push(`${f.path}: not a regular file`);
      else if (st.size !== f.size_bytes) problems.push(`${f.path}: size ${st.size} != ${f.size_bytes}`);
    } catch {
      problems.push(`${f.path}: missing`);
    }
  }
  return problems;
}

function toEntry(row: ModelRow, files: FileRow[]): CatalogEntry {
  const at = row.reference.indexOf("@");
  const plainRef = at >= 0 && row.provider === "hf" ? row.reference.slice(0, at) : row.reference;
  let metadata: Record<string, unknown> = {};
  if (row.metadata_json) {
    try {
      const parsed = JSON.parse(row.metadata_json);
      if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) metadata = parsed;
    } catch {
      /* keep {} */
    }
  }
  return {
    model_ref: `${row.provider}:${plainRef}`,
    provider: row.provider,
    reference: row.reference,
    revision: row.revision,
    commit: row.commit_sha,
    local_path: row.local_path,
    size_bytes: row.size_bytes,
    downloaded_at: row.downloaded_at,
    format: row.format,
    quantization: row.quantization,
    metadata,
    last_used_at: row.last_used_at,
    files: files.map(fileColumns),
  };
}

/** The columns of a model_files row, in one place for writes and reads. */
function fileColumns(f: CatalogFile): CatalogFile {
  return {
    path: f.path,
    local_path: f.local_path,
    size_bytes: f.size_bytes,
    sha256: f.sha256,
    git_oid: f.git_oid,
    blob_path: f.blob_path,
  };
}
