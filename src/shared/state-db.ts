/**
 * The hive's own state that must survive a restart (`<data_dir>/state.db`): its workers and its
 * unfinished downloads. Kept apart from the model catalog (models.db) on purpose: the catalog is
 * an index of files that can be rebuilt from disk; this is what only the running hive knew.
 *
 * WAL with synchronous=NORMAL: every write is durable against a crash of the hive (SIGKILL, OOM)
 * at once, and against power loss from the next checkpoint; one write costs tens of µs.
 * The file is locked (`locking_mode = EXCLUSIVE`) while the hive runs: a second hive on the same
 * data dir would otherwise take the first one's workers for leftovers; it refuses to start instead.
 * The kernel drops the lock when the process dies, however it dies.
 * A file that is not a database or fails `PRAGMA quick_check` is moved aside to
 * `state.db.corrupt-<unix ms>` and the hive starts with no saved state (one warn line): losing the
 * saved state costs adoption, refusing to start would cost the host.
 */
import { Database, SQLiteError } from "bun:sqlite";
import type { Logger } from "./logger.ts";
import { findDamage, moveAside } from "./sqlite-damage.ts";

/** Each area brings its tables as idempotent DDL (CREATE TABLE IF NOT EXISTS …). */
export type StateSchema = string;

export interface StateDb {
  readonly db: Database;
  readonly path: string;
  close(): void;
}

/** Thrown when another hive holds the state file. */
export class StateInUseError extends Error {}

export function openStateDb(path: string, schemas: StateSchema[], logger: Logger, now: () => number = Date.now): StateDb {
  let damage: string | null;
  try {
    damage = findDamage(path);
  } catch (e) {
    throw isBusy(e) ? inUse(path) : e;
  }
  if (damage !== null) {
    const movedTo = moveAside(path, now());
    logger.warn(`hive state ${path} is damaged; moved it to ${movedTo} and started without saved workers and downloads`, { damage });
  }
  const db = new Database(path, { create: true, strict: true });
  try {
    db.exec("PRAGMA locking_mode = EXCLUSIVE");
    db.exec("PRAGMA journal_mode = WAL");
    db.exec("PRAGMA synchronous = NORMAL");
    // A write takes the exclusive lock now, not at the first worker change.
    db.exec("BEGIN IMMEDIATE");
    for (const ddl of schemas) db.exec(ddl);
    db.exec("COMMIT");
  } catch (e) {
    db.close(false);
    throw isBusy(e) ? inUse(path) : e;
  }
  let closed = false;
  return {
    db,
    path,
    close() {
      if (closed) return;
      closed = true;
      db.close(false);
    },
  };
}

const isBusy = (e: unknown) => e instanceof SQLiteError && String(e.code).startsWith("SQLITE_BUSY");

const inUse = (path: string) => new StateInUseError(`${path} is in use by another rbee-hive on the same data dir`);
