/**
 * Catalog schema and its versioned migrations (PRAGMA user_version).
 *
 * Version 0 is either a fresh file or an upstream rbee-hive database (which never set
 * user_version): migration 1 creates the upstream `models` table only if it is missing, so an
 * upstream database keeps its rows. Later migrations only add columns and tables.
 */
import type { Database } from "bun:sqlite";
import { HiveError } from "../../shared/errors.ts";

/** The upstream table, byte for byte. */
export const UPSTREAM_MODELS_DDL =
  "CREATE TABLE models (reference TEXT NOT NULL, provider TEXT NOT NULL, local_path TEXT NOT NULL, size_bytes INTEGER NOT NULL, downloaded_at INTEGER NOT NULL, PRIMARY KEY (reference, provider))";

const UPSTREAM_COLUMNS = ["reference", "provider", "local_path", "size_bytes", "downloaded_at"];

/** Columns added to `models` by migration 2 (all nullable, so upstream readers are unaffected). */
export const ADDED_MODEL_COLUMNS: Array<[name: string, type: string]> = [
  ["revision", "TEXT"], // requested revision (branch/tag/commit), NULL for upstream rows and file: models
  ["commit_sha", "TEXT"], // commit the revision resolved to
  ["format", "TEXT"], // gguf | safetensors | other
  ["quantization", "TEXT"], // e.g. Q4_K_M
  ["metadata_json", "TEXT"], // free-form JSON object
  ["last_used_at", "INTEGER"], // unix seconds
];

interface Migration {
  version: number;
  name: string;
  up(db: Database): void;
}

function columnsOf(db: Database, table: string): string[] {
  return (db.query(`PRAGMA table_info(${table})`).all() as Array<{ name: string }>).map((r) => r.name);
}

export const MIGRATIONS: Migration[] = [
  {
    version: 1,
    name: "upstream models table",
    up(db) {
      const exists = db.query("SELECT 1 AS x FROM sqlite_master WHERE type = 'table' AND name = 'models'").get();
      if (!exists) {
        db.run(UPSTREAM_MODELS_DDL);
        return;
      }
      const cols = columnsOf(db, "models");
      const missing = UPSTREAM_COLUMNS.filter((c) => !cols.includes(c));
      if (missing.length > 0) {
        throw new HiveError(500, "CATALOG_SCHEMA_MISMATCH", `existing models table lacks columns: ${missing.join(", ")}`, {
          missing,
        });
      }
    },
  },
  {
    version: 2,
    name: "revision, format, per-file hashes",
    up(db) {
      const cols = columnsOf(db, "models");
      for (const [name, type] of ADDED_MODEL_COLUMNS) {
        if (!cols.includes(name)) db.run(`ALTER TABLE models ADD COLUMN ${name} ${type}`);
      }
      db.run(`CREATE TABLE IF NOT EXISTS model_files (
        reference TEXT NOT NULL,
        provider TEXT NOT NULL,
        path TEXT NOT NULL,
        local_path TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        sha256 TEXT,
        git_oid TEXT,
        blob_path TEXT,
        PRIMARY KEY (reference, provider, path),
        FOREIGN KEY (reference, provider) REFERENCES models (reference, provider) ON DELETE CASCADE
      )`);
    },
  },
];

export const LATEST_SCHEMA_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;

export function schemaVersion(db: Database): number {
  return (db.query("PRAGMA user_version").get() as { user_version: number }).user_version;
}

/** Apply every pending migration, each in its own IMMEDIATE transaction. Returns the versions applied. */
export function migrate(db: Database): number[] {
  const current = schemaVersion(db);
  if (current > LATEST_SCHEMA_VERSION) {
    throw new HiveError(
      500,
      "CATALOG_SCHEMA_TOO_NEW",
      `model catalog schema version ${current} is newer than this hive understands (${LATEST_SCHEMA_VERSION}); upgrade rbee-hive`,
      { found: current, supported: LATEST_SCHEMA_VERSION },
    );
  }
  const applied: number[] = [];
  for (const m of MIGRATIONS) {
    if (m.version <= current) continue;
    db.transaction(() => {
      m.up(db);
      db.run(`PRAGMA user_version = ${m.version}`);
    }).immediate();
    applied.push(m.version);
  }
  return applied;
}
