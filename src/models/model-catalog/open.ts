/**
 * Opening the catalog at start-up. A models.db that is not a database, or fails
 * `PRAGMA quick_check`, is moved aside (with its -wal and -shm) to `models.db.corrupt-<unix ms>`
 * and a fresh catalog is created and rebuilt from the models on disk: a damaged index must not
 * keep the hive from serving, and the operator keeps the old file to look at. Any other failure to
 * open (permissions, I/O) is thrown to the caller, which refuses to start.
 */
import { Database, SQLiteError } from "bun:sqlite";
import { existsSync, renameSync, rmSync } from "node:fs";
import type { Clock } from "../../shared/clock.ts";
import { systemClock } from "../../shared/clock.ts";
import type { Logger } from "../../shared/logger.ts";
import { ModelCatalog } from "./catalog.ts";

/** SQLite's answers for a file whose content is damaged (not for a file it cannot open). */
const DAMAGE_CODES = new Set(["SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_CORRUPT_INDEX", "SQLITE_CORRUPT_SEQUENCE", "SQLITE_CORRUPT_VTAB"]);

export interface OpenCatalogOptions {
  path: string;
  /** Where the models live (named in the log line about a rebuild). */
  modelsDir: string;
  clock?: Clock;
  logger: Logger;
  /** Re-register what is on disk into a fresh catalog; returns the refs registered. */
  rebuild: (catalog: ModelCatalog) => string[];
}

export interface OpenedCatalog {
  catalog: ModelCatalog;
  /** Where a damaged file was moved to, or null when the catalog was sound (or new). */
  movedTo: string | null;
}

export function openCatalog(o: OpenCatalogOptions): OpenedCatalog {
  const clock = o.clock ?? systemClock;
  const existed = ["-wal", "-shm", ""].filter((suffix) => existsSync(o.path + suffix));
  const damage = findDamage(o.path);
  if (damage === null) return { catalog: new ModelCatalog({ path: o.path, clock, logger: o.logger }), movedTo: null };
  const movedTo = `${o.path}.corrupt-${clock.now()}`;
  // The -wal and -shm go too: a fresh file must never replay the old write-ahead log. Those the
  // read-only check itself created are empty and simply removed.
  for (const suffix of ["-wal", "-shm", ""]) {
    if (existed.includes(suffix)) renameSync(o.path + suffix, movedTo + suffix);
    else rmSync(o.path + suffix, { force: true });
  }
  const catalog = new ModelCatalog({ path: o.path, clock, logger: o.logger });
  const rebuilt = o.rebuild(catalog);
  o.logger.warn(`model catalog ${o.path} is damaged; moved it to ${movedTo} and rebuilt the catalog from ${o.modelsDir}`, {
    damage,
    rebuilt,
  });
  return { catalog, movedTo };
}

/** null when the file is absent or passes `PRAGMA quick_check`; else what SQLite found. */
function findDamage(path: string): string | null {
  if (!existsSync(path)) return null;
  let db: Database | undefined;
  try {
    // Read-only: the check must not checkpoint a WAL into a damaged file, nor delete the WAL.
    db = new Database(path, { readonly: true, strict: true });
    const rows = db.query("PRAGMA quick_check").all() as Array<{ quick_check: string }>;
    if (rows.length === 1 && rows[0]!.quick_check === "ok") return null;
    return rows.map((r) => r.quick_check).join("; ").slice(0, 500);
  } catch (e) {
    if (e instanceof SQLiteError && DAMAGE_CODES.has(String(e.code))) return `${e.code}: ${e.message}`;
    throw e;
  } finally {
    db?.close(false);
  }
}
