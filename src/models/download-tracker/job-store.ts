/**
 * Unfinished downloads survive a restart of the hive: a job is saved in the `download_jobs` table
 * of the hive's state file (src/shared/state-db.ts) when it starts and removed when it ends
 * (complete, failed, cancelled). A job the hive's shutdown interrupted stays, and so does one the
 * hive did not live to finish (SIGKILL, crash); the next hive resumes each under the same id, from
 * the parts already on disk (the provisioner's per-part resume state).
 */
import type { Database, Statement } from "bun:sqlite";

export const DOWNLOADS_SCHEMA = `
CREATE TABLE IF NOT EXISTS download_jobs (
  id           TEXT PRIMARY KEY,
  model_ref    TEXT NOT NULL,
  revision     TEXT NOT NULL,
  revision_arg TEXT,
  started_at   INTEGER NOT NULL
)`;

export interface SavedDownload {
  id: string;
  model_ref: string;
  /** The revision downloaded (default filled in). */
  revision: string;
  /** The revision as the caller gave it (null = the default): the catalog key uses it. */
  revision_arg: string | null;
  started_at: number;
}

/** What the tracker needs of the store (tests may pass another). */
export interface DownloadJobStore {
  save(job: SavedDownload): void;
  remove(id: string): void;
  list(): SavedDownload[];
}

export class SqliteDownloadJobStore implements DownloadJobStore {
  private readonly insert: Statement;
  private readonly del: Statement;

  constructor(private readonly db: Database) {
    this.insert = db.query(
      "INSERT OR REPLACE INTO download_jobs (id, model_ref, revision, revision_arg, started_at) VALUES ($id, $model_ref, $revision, $revision_arg, $started_at)",
    );
    this.del = db.query("DELETE FROM download_jobs WHERE id = $id");
  }

  save(job: SavedDownload): void {
    this.insert.run({ ...job });
  }

  remove(id: string): void {
    this.del.run({ id });
  }

  list(): SavedDownload[] {
    return this.db.query("SELECT id, model_ref, revision, revision_arg, started_at FROM download_jobs ORDER BY rowid").all() as SavedDownload[];
  }
}
