/**
 * download-tracker: one download job per model (key: model_ref + revision), shared by every
 * request for it, with progress fanned out to any number of subscribers.
 *
 * - `start()` of a model already downloading joins that job (one transfer); of a model in the
 *   catalog (files still on disk) answers `{cached: true}`; `file:` refs are registered on the spot.
 * - Events carry increasing numeric ids; `subscribe(id, afterEventId)` replays what was missed
 *   (Last-Event-ID), or, without an id, the latest event (a late subscriber of a finished job gets
 *   its terminal event). Progress is throttled to one event per `progressIntervalMs` per job.
 * - On success the model is registered in the catalog (one transaction) and only then is
 *   `{"stage":"complete","local_path"}` emitted.
 * - Finished jobs stay answerable for `finishedJobTtlMs` (injected clock).
 * - `cancel(id, {purge})` stops the transfer; partial files are kept for resume unless purge.
 *
 * Event shapes (upstream, extra fields allowed):
 *   {"stage":"downloading","bytes_downloaded","bytes_total","speed_mbps", file, files_done, files_total, phase}
 *   {"stage":"complete","local_path"}
 *   {"stage":"error","message","code"}
 * `speed_mbps` is megabytes (10^6 bytes) per second over the last few seconds.
 * The job record, its event log and the progress throttle are in download-tracker/.
 */
import { randomUUID } from "node:crypto";
import type { Clock } from "../shared/clock.ts";
import { systemClock } from "../shared/clock.ts";
import { HiveError, errorMessage, isHiveError } from "../shared/errors.ts";
import type { Logger } from "../shared/logger.ts";
import { silentLogger } from "../shared/logger.ts";
import type { CatalogEntry, ModelCatalog, RegisterInput } from "./model-catalog/catalog.ts";
import { DEFAULT_REVISION, type FileModelRef, type HfModelRef, type ParsedModelRef } from "./model-catalog/model-ref.ts";
import type { ModelPlan, ProvisionOptions, ProvisionResult } from "./provisioner/provisioner.ts";
import type { ModelFootprint } from "../shared/model-source.ts";
import type { DownloadJobInfo, ProgressEvent } from "./schemas.ts";
import { DownloadJob, jobKey } from "./download-tracker/job.ts";
import type { DownloadJobStore } from "./download-tracker/job-store.ts";
import { parseModelRef } from "./model-catalog/model-ref.ts";
import type { DownloadListener } from "./download-tracker/event-log.ts";

export type { DownloadListener, TrackedEvent } from "./download-tracker/event-log.ts";

/** What the tracker needs of the provisioner (the real one, or a stub in tests). */
export interface ProvisionerLike {
  plan(ref: HfModelRef, opts: { revision?: string; signal?: AbortSignal }): Promise<ModelPlan>;
  provision(plan: ModelPlan, opts: ProvisionOptions): Promise<ProvisionResult>;
  registerLocal(ref: FileModelRef): Promise<RegisterInput>;
  purgePartials(plan: ModelPlan): void;
  footprint(plan: ModelPlan, opts?: { signal?: AbortSignal }): Promise<ModelFootprint>;
}

/** What registration adds to a model's catalog metadata; may refuse the model (400 INVALID_GGUF). */
export type DescribeModel = (model: Pick<RegisterInput, "local_path" | "files"> & { format: string | null }) => Promise<Record<string, unknown>>;

export interface DownloadTrackerOptions {
  catalog: ModelCatalog;
  provisioner: ProvisionerLike;
  /** Minimum gap between two progress events of a job (`downloads.progress_interval_s`). */
  progressIntervalMs: number;
  /** How long a finished job stays answerable (`downloads.finished_ttl_s`). */
  finishedJobTtlMs: number;
  clock?: Clock;
  logger?: Logger;
  /** Job ids (default crypto.randomUUID). */
  idFactory?: () => string;
  /**
   * Read the model's own description at registration (the daemon: its GGUF header, so the catalog
   * keeps it and never holds a file that is not valid GGUF). Default: nothing added.
   */
  describe?: DescribeModel;
  /** Told when a job starts and when it ends (complete/error), not on every progress event. */
  onLifecycle?: (job: DownloadJobInfo, event: ProgressEvent | { stage: "started" }) => void;
  /** Where unfinished jobs are saved, so a restarted hive resumes them (job-store.ts). */
  store?: DownloadJobStore;
}

export type StartResult =
  | { cached: true; local_path: string; entry: CatalogEntry }
  | { cached: false; job: DownloadJobInfo; joined: boolean };

export class DownloadTracker {
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly idFactory: () => string;
  private readonly jobs = new Map<string, DownloadJob>();
  /** Running jobs by model key. */
  private readonly active = new Map<string, DownloadJob>();
  /** Footprint reads in flight by model key (see footprint()). */
  private readonly footprints = new Map<string, Promise<ModelFootprint>>();

  constructor(private readonly o: DownloadTrackerOptions) {
    this.clock = o.clock ?? systemClock;
    this.logger = o.logger ?? silentLogger;
    this.idFactory = o.idFactory ?? (() => randomUUID());
  }

  /**
   * Start (or join) the download of a model; `ref` is parsed and `revision` validated by the
   * caller. For `file:` refs the errors of Provisioner.registerLocal are thrown. Hub/plan errors
   * (404, 403, ambiguous choice, 507 …) arrive as the job's error event and reject `whenDone`;
   * with `awaitPlan: true` start() waits for the plan and throws them instead (the job is still
   * recorded).
   */
  async start(ref: ParsedModelRef, opts: { revision?: string; awaitPlan?: boolean } = {}): Promise<StartResult> {
    if (ref.provider === "file") return this.registerLocal(ref);
    const revision = opts.revision ?? DEFAULT_REVISION;
    const running = this.active.get(jobKey(ref.modelRef, revision));
    if (running) {
      if (opts.awaitPlan) await running.planned.promise;
      return { cached: false, job: running.info(), joined: true };
    }
    const entry = this.o.catalog.get(ref.modelRef, opts.revision);
    if (entry) {
      const check = this.o.catalog.checkOnDisk(entry);
      if (check.ok) return { cached: true, local_path: entry.local_path, entry };
      this.logger.warn("catalog entry lost files on disk; downloading again", { model_ref: ref.modelRef, problems: check.problems });
      this.o.catalog.remove(ref.modelRef, opts.revision);
    }
    const job = this.createJob(ref, revision, opts.revision);
    if (opts.awaitPlan) await job.planned.promise;
    return { cached: false, job: job.info(), joined: false };
  }

  /**
   * What a model not on this host is made of, before any transfer: the plan of its running
   * download, or a new plan (hub API calls), and the footprint read from the hub. Hub and plan
   * errors are thrown.
   */
  footprint(ref: HfModelRef, opts: { revision?: string } = {}): Promise<ModelFootprint> {
    // Concurrent spawns of one model share one plan and one header read.
    const key = jobKey(ref.modelRef, opts.revision ?? DEFAULT_REVISION);
    const pending = this.footprints.get(key);
    if (pending) return pending;
    const read = (async () => {
      const running = this.active.get(key);
      if (running) await running.planned.promise;
      const plan = running?.plan ?? (await this.o.provisioner.plan(ref, { revision: opts.revision }));
      return this.o.provisioner.footprint(plan);
    })().finally(() => this.footprints.delete(key));
    this.footprints.set(key, read);
    return read;
  }

  get(id: string): DownloadJobInfo | undefined {
    return this.lookup(id)?.info();
  }

  list(): DownloadJobInfo[] {
    this.sweep();
    return [...this.jobs.values()].map((j) => j.info());
  }

  /**
   * Listen to a job's events. Missed events are replayed synchronously before this returns: those
   * with id > afterEventId, or (no id) the latest one. After the terminal event no more arrive.
   * Throws 404 DOWNLOAD_NOT_FOUND.
   */
  subscribe(id: string, afterEventId: number | undefined, listener: DownloadListener): () => void {
    const job = this.mustGet(id);
    job.events.replay(afterEventId, listener);
    if (job.terminal) return () => {};
    return job.events.listen(listener);
  }

  /**
   * Stop a job. Partial files stay for a later resume unless `purge`. On a job that already ended
   * in error/cancel, `purge` still removes its partial files. Throws 404 DOWNLOAD_NOT_FOUND.
   */
  async cancel(id: string, opts: { purge?: boolean } = {}): Promise<DownloadJobInfo> {
    const job = this.mustGet(id);
    if (job.finishedAt === null) {
      job.cancelRequested = true;
      job.ctrl.abort(new HiveError(409, "DOWNLOAD_CANCELLED", "download cancelled"));
      await job.settled;
    }
    if (opts.purge && job.plan && job.state !== "complete") {
      try {
        this.o.provisioner.purgePartials(job.plan);
      } catch (e) {
        this.logger.warn("could not remove partial files", { download_id: id, error: errorMessage(e) });
      }
    }
    return job.info();
  }

  /** Resolves with the catalog entry when the job completes; rejects with its HiveError otherwise. */
  whenDone(id: string): Promise<CatalogEntry> {
    const job = this.lookup(id);
    if (!job) return Promise.reject(new HiveError(404, "DOWNLOAD_NOT_FOUND", `no download with id ${id}`));
    return job.done.promise;
  }

  /**
   * Start hive: resume every saved job that did not finish (same id, so a worker waiting for it
   * and a client polling it find it again), from the parts already on disk. A model that made it
   * into the catalog meanwhile is not downloaded again. Returns the resumed jobs.
   */
  resumeSaved(): DownloadJobInfo[] {
    const resumed: DownloadJobInfo[] = [];
    for (const saved of this.o.store?.list() ?? []) {
      let ref: ParsedModelRef | null = null;
      try {
        ref = parseModelRef(saved.model_ref);
      } catch {
        // a row this version cannot read: dropped
      }
      const revisionArg = saved.revision_arg ?? undefined;
      if (ref?.provider !== "hf" || this.active.has(jobKey(ref.modelRef, saved.revision)) || this.o.catalog.getOnDisk(saved.model_ref, revisionArg)) {
        this.o.store?.remove(saved.id);
        continue;
      }
      const job = this.createJob(ref, saved.revision, revisionArg, saved.id);
      this.logger.info("download resumed", { download_id: job.id, model_ref: job.modelRef, revision: job.revision });
      resumed.push(job.info());
    }
    return resumed;
  }

  /** Shutdown: abort every running job (partials kept for resume) and wait for them to stop. */
  async stopAll(): Promise<void> {
    const running = [...this.active.values()];
    for (const job of running) {
      job.shutdown = true;
      job.ctrl.abort(new HiveError(503, "HIVE_SHUTTING_DOWN", "the hive is shutting down"));
    }
    await Promise.all(running.map((j) => j.settled));
    for (const job of this.jobs.values()) {
      if (job.expiryTimer) this.clock.clearTimeout(job.expiryTimer);
      job.expiryTimer = null;
      job.throttle.cancel();
    }
  }

  // ------------------------------------------------------------------ internals

  /**
   * A `file:` model is described afresh every time: the directory may have changed, and every
   * file handed out must still resolve inside the allowed roots. The catalog is only written
   * when the description differs.
   */
  private async registerLocal(ref: FileModelRef): Promise<StartResult> {
    const input = await this.o.provisioner.registerLocal(ref);
    const existing = this.o.catalog.get(ref.modelRef);
    if (existing && sameLocalModel(existing, input)) return { cached: true, local_path: existing.local_path, entry: existing };
    const entry = this.o.catalog.register(await this.described(input));
    return { cached: true, local_path: entry.local_path, entry };
  }

  private createJob(ref: HfModelRef, revision: string, revisionArg: string | undefined, id = this.idFactory()): DownloadJob {
    const job = new DownloadJob({
      id,
      ref,
      revision,
      revisionArg,
      clock: this.clock,
      progressIntervalMs: this.o.progressIntervalMs,
      onEvent: (j, data) => this.emit(j, data),
      onListenerError: (j, e) => this.logger.warn("download listener threw", { download_id: j.id, error: errorMessage(e) }),
    });
    this.jobs.set(job.id, job);
    this.active.set(job.key, job);
    this.saved("save", job);
    this.emit(job, { stage: "downloading", bytes_downloaded: 0, bytes_total: 0, speed_mbps: 0, phase: "planning" });
    job.settled = this.run(job);
    return job;
  }

  private async run(job: DownloadJob): Promise<void> {
    try {
      const entry = await this.download(job);
      job.state = "complete";
      job.localPath = entry.local_path;
      job.progress.bytes_downloaded = job.progress.bytes_total;
      job.progress.files_done = job.progress.files_total;
      job.throttle.flush(true);
      this.emit(job, { stage: "complete", local_path: entry.local_path });
      job.done.resolve(entry);
    } catch (e) {
      this.fail(job, e);
    } finally {
      job.finishedAt = this.clock.now();
      // A job the shutdown interrupted stays saved: the next hive resumes it.
      if (!job.shutdown) this.saved("remove", job);
      if (this.active.get(job.key) === job) this.active.delete(job.key);
      job.events.close();
      job.expiryTimer = this.clock.setTimeout(() => this.expire(job), this.o.finishedJobTtlMs);
    }
  }

  /** plan → provision → register (one transaction); `complete` goes out only once it is committed. */
  private async download(job: DownloadJob): Promise<CatalogEntry> {
    const signal = job.ctrl.signal;
    const plan = await this.o.provisioner.plan(job.ref, { revision: job.revisionArg, signal });
    job.plan = plan;
    job.progress.bytes_total = plan.bytesTotal;
    job.progress.files_total = plan.files.length;
    job.planned.resolve();
    if (signal.aborted) throw signal.reason;
    job.state = "downloading";
    const result = await this.o.provisioner.provision(plan, {
      signal,
      onProgress: (p) => {
        job.progress = p;
        job.throttle.sample(p.bytes_transferred);
      },
    });
    if (signal.aborted) throw signal.reason;
    const described = await this.described(result);
    if (signal.aborted) throw signal.reason;
    return this.o.catalog.register(described);
  }

  /** The registration input with what `describe` read of the model merged into its metadata. */
  private async described<T extends RegisterInput>(input: T): Promise<T> {
    if (!this.o.describe) return input;
    const extra = await this.o.describe({ local_path: input.local_path, format: input.format ?? null, files: input.files });
    return { ...input, metadata: { ...input.metadata, ...extra } };
  }

  private fail(job: DownloadJob, e: unknown): void {
    let err: HiveError;
    if (job.cancelRequested) {
      job.state = "cancelled";
      err = new HiveError(409, "DOWNLOAD_CANCELLED", "download cancelled");
    } else if (job.shutdown) {
      job.state = "error";
      err = new HiveError(503, "HIVE_SHUTTING_DOWN", "download interrupted: the hive is shutting down (it resumes on the next request)");
    } else {
      job.state = "error";
      err = isHiveError(e) ? e : new HiveError(500, "DOWNLOAD_FAILED", `download failed: ${errorMessage(e)}`);
    }
    job.error = { code: err.code, message: err.message };
    this.logger.warn("download ended without a model", { download_id: job.id, model_ref: job.modelRef, code: err.code, error: err.message });
    job.throttle.cancel();
    this.emit(job, { stage: "error", message: err.message, code: err.code });
    job.planned.reject(err);
    job.done.reject(err);
  }

  private emit(job: DownloadJob, data: ProgressEvent): void {
    const ev = job.events.append(data);
    if (data.stage !== "downloading") this.notifyLifecycle(job, data);
    else if (ev.id === 1) this.notifyLifecycle(job, { stage: "started" });
  }

  private notifyLifecycle(job: DownloadJob, event: ProgressEvent | { stage: "started" }): void {
    try {
      this.o.onLifecycle?.(job.info(), event);
    } catch (e) {
      this.logger.warn("download lifecycle listener failed", { err: errorMessage(e) });
    }
  }

  /** Saving is best effort: a state file that cannot take the write must not fail a download. */
  private saved(op: "save" | "remove", job: DownloadJob): void {
    if (!this.o.store) return;
    try {
      if (op === "save") {
        this.o.store.save({ id: job.id, model_ref: job.modelRef, revision: job.revision, revision_arg: job.revisionArg ?? null, started_at: job.startedAt });
      } else {
        this.o.store.remove(job.id);
      }
    } catch (e) {
      this.logger.warn("could not save the download's state; a restarted hive may not resume it", { download_id: job.id, err: errorMessage(e) });
    }
  }

  private expire(job: DownloadJob): void {
    job.expiryTimer = null;
    if (this.jobs.get(job.id) === job) this.jobs.delete(job.id);
  }

  /** Drop finished jobs past their TTL (works with clocks whose timers never fire). */
  private sweep(): void {
    const now = this.clock.now();
    for (const job of this.jobs.values()) {
      if (job.finishedAt !== null && now - job.finishedAt >= this.o.finishedJobTtlMs) {
        if (job.expiryTimer) this.clock.clearTimeout(job.expiryTimer);
        this.jobs.delete(job.id);
      }
    }
  }

  private lookup(id: string): DownloadJob | undefined {
    this.sweep();
    return this.jobs.get(id);
  }

  private mustGet(id: string): DownloadJob {
    const job = this.lookup(id);
    if (!job) throw new HiveError(404, "DOWNLOAD_NOT_FOUND", `no download with id ${id} (finished downloads are kept for ${Math.round(this.o.finishedJobTtlMs / 1000)} s)`);
    return job;
  }
}

/** True when a catalog entry already records exactly this description of a `file:` model. */
function sameLocalModel(entry: CatalogEntry, input: RegisterInput): boolean {
  if (entry.local_path !== input.local_path || entry.files.length !== input.files.length) return false;
  const recorded = new Map(entry.files.map((f) => [f.path, f]));
  return input.files.every((f) => {
    const r = recorded.get(f.path);
    return r !== undefined && r.local_path === f.local_path && r.size_bytes === f.size_bytes;
  });
}
