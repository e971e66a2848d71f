/**
 * A SQLite file whose content is damaged is moved aside, never repaired in place: the operator
 * keeps the old file to look at, and a fresh file starts. Shared by the model catalog and the
 * hive's state file.
 */
import { Database, SQLiteError } from "bun:sqlite";
import { existsSync, renameSync, rmSync } from "node:fs";

/** SQLite's answers for a file whose content is damaged (not for a file it cannot open). */
const DAMAGE_CODES = new Set(["SQLITE_CORRUPT", "SQLITE_NOTADB", "SQLITE_CORRUPT_INDEX", "SQLITE_CORRUPT_SEQUENCE", "SQLITE_CORRUPT_VTAB"]);

/**
 * null when the file is absent or passes `PRAGMA quick_check`; else what SQLite found. Other
 * failures to open (permissions, I/O, a lock) are thrown.
 */
export function findDamage(path: string): string | null {
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

/**
 * Move `path` and its -wal/-shm to `<path>.corrupt-<at>`. Only the files that existed before the
 * check (`existed`) move; -wal/-shm the read-only check itself created are empty and removed, so a
 * fresh file never replays the old write-ahead log. Returns where the file went.
 */
export function moveAside(path: string, at: number, existed: string[] = existingSuffixes(path)): string {
  const movedTo = `${path}.corrupt-${at}`;
  for (const suffix of ["-wal", "-shm", ""]) {
    if (existed.includes(suffix)) renameSync(path + suffix, movedTo + suffix);
    else rmSync(path + suffix, { force: true });
  }
  return movedTo;
}

/** Which of `path`, `-wal`, `-shm` exist now (take it before findDamage, which may create them). */
export function existingSuffixes(path: string): string[] {
  return ["-wal", "-shm", ""].filter((suffix) => existsSync(path + suffix));
}
