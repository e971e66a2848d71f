/**
 * Workers survive a restart of the hive on disk: every change of a live worker is written through
 * the registry's single change point (`onChange`) into the `workers` table of the hive's state
 * file (src/shared/state-db.ts). A worker that leaves the live list leaves the table.
 *
 * Besides the record itself (kept whole as JSON, so an adopted worker reads exactly as before),
 * each row names its process for good: pid, process group and the start time from
 * `/proc/<pid>/stat`, read once when the pid changes. With those the next hive can tell its
 * worker from an unrelated process that got the same pid (adoption.ts).
 */
import type { Database, Statement } from "bun:sqlite";
import { errorMessage } from "../shared/errors.ts";
import type { Logger } from "../shared/logger.ts";
import { readProcStat } from "../shared/proc-stat.ts";
import type { RegistryChange, WorkerRegistry, WorkerSnapshot } from "./registry.ts";
import type { WorkerInfo } from "./schemas.ts";

export const WORKERS_SCHEMA = `
CREATE TABLE IF NOT EXISTS workers (
  id              TEXT PRIMARY KEY,
  pid             INTEGER,
  pgid            INTEGER,
  start_time      TEXT,
  port            INTEGER NOT NULL,
  url             TEXT NOT NULL,
  model_ref       TEXT NOT NULL,
  backend         TEXT NOT NULL,
  device          INTEGER NOT NULL,
  profile         TEXT NOT NULL,
  slots_total     INTEGER NOT NULL,
  slots_available INTEGER NOT NULL,
  restart_count   INTEGER NOT NULL,
  state           TEXT NOT NULL,
  phase           TEXT NOT NULL,
  record          TEXT NOT NULL,
  hive_pid        INTEGER NOT NULL,
  updated_at      INTEGER NOT NULL
)`;

/** The process a row names: pid, its group and its start time (null where /proc is missing). */
export interface WorkerProcess {
  pid: number;
  pgid: number;
  startTime: string | null;
}

export interface PersistedWorker {
  record: WorkerInfo;
  process: WorkerProcess | null;
  /** The hive process that wrote the row last. */
  hivePid: number;
}

interface Row {
  pid: number | null;
  pgid: number | null;
  start_time: string | null;
  record: string;
  hive_pid: number;
}

export class WorkerStore {
  private readonly upsert: Statement;
  private readonly del: Statement;

  constructor(
    private readonly db: Database,
    private readonly now: () => number = Date.now,
  ) {
    this.upsert = db.query(`
      INSERT INTO workers (id, pid, pgid, start_time, port, url, model_ref, backend, device, profile, slots_total,
                           slots_available, restart_count, state, phase, record, hive_pid, updated_at)
      VALUES ($id, $pid, $pgid, $start_time, $port, $url, $model_ref, $backend, $device, $profile, $slots_total,
              $slots_available, $restart_count, $state, $phase, $record, $hive_pid, $updated_at)
      ON CONFLICT(id) DO UPDATE SET pid = excluded.pid, pgid = excluded.pgid, start_time = excluded.start_time,
        port = excluded.port, url = excluded.url, model_ref = excluded.model_ref, backend = excluded.backend,
        device = excluded.device, profile = excluded.profile, slots_total = excluded.slots_total,
        slots_available = excluded.slots_available, restart_count = excluded.restart_count, state = excluded.state,
        phase = excluded.phase, record = excluded.record, hive_pid = excluded.hive_pid, updated_at = excluded.updated_at`);
    this.del = db.query("DELETE FROM workers WHERE id = $id");
  }

  save(w: WorkerSnapshot, proc: WorkerProcess | null): void {
    this.upsert.run({
      id: w.id,
      pid: proc?.pid ?? null,
      pgid: proc?.pgid ?? null,
      start_time: proc?.startTime ?? null,
      port: w.port,
      url: w.url,
      model_ref: w.model_ref,
      backend: w.backend,
      device: w.device,
      profile: w.profile,
      slots_total: w.slots_total,
      slots_available: w.slots_available,
      restart_count: w.restart_count,
      state: w.state,
      phase: w.phase,
      record: JSON.stringify(w),
      hive_pid: process.pid,
      updated_at: this.now(),
    });
  }

  remove(id: string): void {
    this.del.run({ id });
  }

  /** Every saved worker, oldest first; a row whose record does not parse is dropped (and deleted). */
  list(): PersistedWorker[] {
    const rows = this.db.query("SELECT id, pid, pgid, start_time, record, hive_pid FROM workers ORDER BY rowid").all() as (Row & { id: string })[];
    const out: PersistedWorker[] = [];
    for (const r of rows) {
      let record: WorkerInfo;
      try {
        record = JSON.parse(r.record) as WorkerInfo;
      } catch {
        this.remove(r.id);
        continue;
      }
      const proc = r.pid === null ? null : { pid: r.pid, pgid: r.pgid ?? r.pid, startTime: r.start_time };
      out.push({ record, process: proc, hivePid: r.hive_pid });
    }
    return out;
  }
}

/**
 * Fields that move with every request. A change of only these is written at most
 * once per VOLATILE_FLUSH_MS: each forwarded request changes a worker twice (slot taken, slot
 * freed), and a SQLite write per change cost a quarter of the hive's CPU per request. Adoption
 * resets them anyway (a restarted hive starts with nothing in flight).
 */
const VOLATILE_FIELDS = new Set<string>(["state", "slots_available", "in_flight", "last_activity"]);
export const VOLATILE_FLUSH_MS = 1000;

/** True when `next` differs from `prev` only in volatile fields (and not in loading vs ready). */
function onlyVolatile(prev: WorkerSnapshot | undefined, next: WorkerSnapshot): boolean {
  if (!prev || (prev.state === "loading") !== (next.state === "loading")) return false;
  for (const key in next) {
    const k = key as keyof WorkerSnapshot;
    if (prev[k] !== next[k] && !VOLATILE_FIELDS.has(key)) return false;
  }
  return true;
}

/**
 * Write every change of a live worker through to the store: at once when something that names or
 * places the worker changed (pid, port, phase, counters…), batched when only activity moved. A
 * failed write is logged (once per kind of failure in a row) and never fails the change itself:
 * the running hive stays right, only the next one would know less. Returns the unsubscribe function.
 */
export function persistWorkers(registry: WorkerRegistry, store: WorkerStore, logger: Logger): () => void {
  const procs = new Map<string, WorkerProcess>();
  const saved = new Map<string, WorkerSnapshot>();
  const pending = new Map<string, WorkerSnapshot>();
  let flushTimer: ReturnType<typeof setTimeout> | null = null;
  let lastFailure = "";
  const processOf = (w: WorkerSnapshot): WorkerProcess | null => {
    if (w.pid === null) {
      procs.delete(w.id);
      return null;
    }
    const known = procs.get(w.id);
    if (known?.pid === w.pid) return known;
    const st = readProcStat(w.pid);
    const proc = { pid: w.pid, pgid: st?.pgrp ?? w.pid, startTime: st?.startTime ?? null };
    procs.set(w.id, proc);
    return proc;
  };
  const guarded = (id: string, write: () => void) => {
    try {
      write();
      lastFailure = "";
    } catch (e) {
      const msg = errorMessage(e);
      if (msg !== lastFailure) logger.warn("could not save worker state; a restarted hive may not adopt it", { worker_id: id, err: msg });
      lastFailure = msg;
    }
  };
  const write = (w: WorkerSnapshot) => {
    pending.delete(w.id);
    saved.set(w.id, w);
    guarded(w.id, () => store.save(w, processOf(w)));
  };
  const flush = () => {
    flushTimer = null;
    for (const w of [...pending.values()]) if (registry.live(w.id)) write(w);
    pending.clear();
  };
  const onChange = ({ kind, worker }: RegistryChange) => {
    if (kind === "removed") {
      procs.delete(worker.id);
      saved.delete(worker.id);
      pending.delete(worker.id);
      guarded(worker.id, () => store.remove(worker.id));
    } else if (!registry.live(worker.id)) {
      return; // changes to a retired record are not state to keep
    } else if (onlyVolatile(saved.get(worker.id), worker)) {
      pending.set(worker.id, worker);
      flushTimer ??= setTimeout(flush, VOLATILE_FLUSH_MS);
      (flushTimer as { unref?: () => void }).unref?.();
    } else {
      write(worker);
    }
  };
  const unsubscribe = registry.onChange(onChange);
  return () => {
    unsubscribe();
    if (flushTimer) clearTimeout(flushTimer);
    flush(); // the latest activity is kept on a clean stop
  };
}
