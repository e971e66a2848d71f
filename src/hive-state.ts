/**
 * What lets the hive restart without losing its workers (hive.ts composes it):
 * - the state file `<data_dir>/state.db` with the workers and the unfinished downloads;
 * - the exit policy applied to every worker spawn: output into its log file (it survives us), and
 *   unless `keep_workers_on_exit`, death with the hive (parent-death signal + group guardian);
 * - at start-up: unfinished downloads resumed, then the saved workers adopted, restored, stopped
 *   or reported gone (workers/adoption.ts), before the hive listens.
 */
import { join } from "node:path";
import type { LoadedConfig } from "./config.ts";
import type { Clock } from "./shared/clock.ts";
import type { Spawner } from "./shared/daemon-lifecycle.ts";
import { errorMessage } from "./shared/errors.ts";
import type { HttpClient } from "./shared/http-client.ts";
import type { Logger } from "./shared/logger.ts";
import { openStateDb, type StateDb } from "./shared/state-db.ts";
import type { DownloadTracker } from "./models/download-tracker.ts";
import { DOWNLOADS_SCHEMA, SqliteDownloadJobStore } from "./models/download-tracker/job-store.ts";
import type { ModelsArea } from "./models/area.ts";
import { adoptWorkers, type AdoptingLifecycle, type AdoptionOutcome } from "./workers/adoption.ts";
import { persistWorkers, WORKERS_SCHEMA, WorkerStore } from "./workers/persistence.ts";
import type { WorkerRegistry } from "./workers/registry.ts";
import type { WorkerInfo } from "./workers/schemas.ts";
import { findStrays, stopStrays } from "./workers/strays.ts";

export const STATE_FILE = "state.db";

export interface HiveState {
  db: StateDb;
  workers: WorkerStore;
  downloads: SqliteDownloadJobStore;
}

/** Open (or create) the state file; a damaged one is moved aside. Throws when it cannot be opened at all. */
export function openHiveState(loaded: LoadedConfig, logger: Logger, clock: Clock): HiveState {
  const db = openStateDb(join(loaded.resolved.dataDir, STATE_FILE), [WORKERS_SCHEMA, DOWNLOADS_SCHEMA], logger, () => clock.now());
  return { db, workers: new WorkerStore(db.db, () => clock.now()), downloads: new SqliteDownloadJobStore(db.db) };
}

/**
 * Every worker writes its output into its log file (a pipe to us would EPIPE once we are gone),
 * and with the default policy dies with the hive, its process group included.
 */
export const exitPolicySpawner =
  (base: Spawner, keepWorkers: boolean): Spawner =>
  (opts) =>
    base({ ...opts, outputToLogFile: opts.logFile !== undefined, dieWithParent: !keepWorkers });

export interface TakeOverDeps {
  loaded: LoadedConfig;
  state: HiveState;
  registry: WorkerRegistry;
  lifecycle: AdoptingLifecycle;
  models: Pick<ModelsArea, "tracker" | "resolver">;
  http: HttpClient;
  clock: Clock;
  logger: Logger;
  /** Resolves once the hive listens (restored workers launch after that). */
  listening: Promise<void>;
}

export interface TakeOver {
  outcome: AdoptionOutcome;
  /** Stop writing worker changes (the state file closes next). */
  stopPersisting: () => void;
}

/** Resume the saved downloads, then take the saved workers over; from then on every change is saved. */
export async function takeOver(d: TakeOverDeps): Promise<TakeOver> {
  const { config, resolved } = d.loaded;
  d.models.tracker.resumeSaved();
  const saved = d.state.workers.list();
  const stopPersisting = persistWorkers(d.registry, d.state.workers, d.logger);
  const outcome = await adoptWorkers({
    saved,
    keep: config.workers.keep_workers_on_exit,
    lifecycle: d.lifecycle,
    http: d.http,
    config,
    logsDir: resolved.logsDir,
    clock: d.clock,
    logger: d.logger,
    modelFor: (record) => modelFor(record, d.models),
    listening: d.listening,
  });
  if (saved.length > 0) {
    d.logger.info("workers of the previous hive", {
      keep_workers_on_exit: config.workers.keep_workers_on_exit,
      adopted: outcome.adopted,
      restored: outcome.restored,
      exited: outcome.exited,
      stopped: outcome.stopped,
      pid_reused: outcome.pidReused,
    });
  }
  void outcome.stops.catch((e) => d.logger.warn("stopping a left-over worker failed", { err: errorMessage(e) }));
  // Workers of this data dir that the saved state does not account for (never saved, or state.db
  // was damaged): nothing could manage them, so they are stopped. Before the hive listens, so no
  // restored worker has been launched yet.
  const known = { pids: new Set<number>(), pgids: new Set<number>() };
  for (const { record, process: proc } of saved) {
    if (record.pid) known.pids.add(record.pid);
    if (proc) known.pids.add(proc.pid), known.pgids.add(proc.pgid);
  }
  const strays = findStrays(resolved.logsDir, known);
  if (strays.length > 0) {
    void stopStrays(strays, config.workers.stop_grace_s * 1000, d.logger).catch((e) => d.logger.warn("stopping a stray worker failed", { err: errorMessage(e) }));
  }
  return { outcome, stopPersisting };
}

/** A restored worker's model: its resumed download (same id), its known path, or resolved again. */
function modelFor(record: WorkerInfo, models: Pick<ModelsArea, "tracker" | "resolver">): Promise<string> {
  if (record.phase === "downloading" && record.download_id && models.tracker.get(record.download_id)) {
    return models.tracker.whenDone(record.download_id).then((entry) => entry.local_path);
  }
  if (record.model_path && record.phase !== "downloading") return Promise.resolve(record.model_path);
  return (async () => {
    const resolved = await models.resolver.resolve(models.resolver.validate(record.model_ref));
    return resolved.kind === "local" ? resolved.path : resolved.done;
  })();
}
