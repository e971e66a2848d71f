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
 */
import { randomUUID } from "node:crypto";
import type { Clock, Timer } from "../shared/clock.ts";
import { systemClock } from "../shared/clock.ts";
import { HiveError, errorMessage, isHiveError } from "../shared/errors.ts";
import type { Logger } from "../shared/logger.ts";
import { silentLogger } from "../shared/logger.ts";
import type { CatalogEntry, ModelCatalog, RegisterInput } from "./model-catalog/catalog.ts";
import type { DownloadJobInfo, JobState, ProgressEvent } from "./model-catalog/types.ts";
export type { DownloadJobInfo, JobState, ProgressEvent };
import { DEFAULT_REVISION, parseModelRef, validateRevision } from "./model-catalog/model-ref.ts";
import type { ModelPlan, ProvisionOptions, ProvisionProgress, ProvisionResult } from "./provisioner/provisioner.ts";

export interface TrackedEvent {
  id: number;
  data: ProgressEvent;
}

export type DownloadListener = (event: TrackedEvent) => void;

/** What the tracker needs of the provisioner (the real one, or a stub in tests). */
export interface ProvisionerLike {
  plan(modelRef: string, opts: { revision?: string; signal?: AbortSignal }): Promise<ModelPlan>;
  provision(plan: ModelPlan, opts: ProvisionOptions): Promise<ProvisionResult>;
  registerLocal(modelRef: string): Promise<RegisterInput>;
  purgePartials(plan: ModelPlan): void;
}

export interface DownloadTrackerOptions {
  catalog: ModelCatalog;
  provisioner: ProvisionerLike;
  clock?: Clock;
  logger?: Logger;
  /** Minimum gap between two progress events of a job (default 100 ms → ≤ 10 events/s). */
  progressIntervalMs?: number;
  /** How long a finished job stays answerable (default 600 000 ms = 10 min). */
  finishedJobTtlMs?: number;
  /** Events kept per job for replay (default 100; the terminal event is always the last kept). */
  historySize?: number;
  /** Window of the speed estimate (default 3000 ms). */
  speedWindowMs?: number;
  /** Job ids (default crypto.randomUUID). */
  idFactory?: () => string;
  /** Told when a job starts and when it ends (complete/error), not on every progress event. */
  onLifecycle?: (job: DownloadJobInfo, event: ProgressEvent | { stage: "started" }) => void;
}

export type StartResult =
  | { cached: true; local_path: string; entry: CatalogEntry }
  | { cached: false; job: DownloadJobInfo; joined: boolean };

interface Deferred<T> {
  promise: Promise<T>;
  resolve(v: T): void;
  reject(e: unknown): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {}); // rejections are for whoever awaits; never "unhandled"
  return { promise, resolve, reject };
}

interface Job {
  id: string;
  key: string;
  modelRef: string;
  revision: string;
  /** revision as given (undefined = default) for catalog keys. */
  revisionArg: string | undefined;
  state: JobState;
  commit: string | null;
  startedAt: number;
  finishedAt: number | null;
  localPath: string | null;
  error: { code: string; message: string } | null;
  ctrl: AbortController;
  plan: ModelPlan | null;
  events: TrackedEvent[];
  nextEventId: number;
  listeners: Set<DownloadListener>;
  progress: ProvisionProgress;
  speedMbps: number;
  samples: Array<[t: number, bytes: number]>;
  lastEmitAt: number;
  lastEmitted: string;
  emitTimer: Timer | null;
  expiryTimer: Timer | null;
  cancelRequested: boolean;
  shutdown: boolean;
  done: Deferred<CatalogEntry>;
  planned: Deferred<void>;
  settled: Promise<void>;
}

export class DownloadTracker {
  private readonly catalog: ModelCatalog;
  private readonly provisioner: ProvisionerLike;
  private readonly clock: Clock;
  private readonly logger: Logger;
  private readonly progressIntervalMs: number;
  private readonly finishedJobTtlMs: number;
  private readonly historySize: number;
  private readonly speedWindowMs: number;
  private readonly idFactory: () => string;
  private readonly onLifecycle: DownloadTrackerOptions["onLifecycle"];
  private readonly jobs = new Map<string, Job>();
  /** Running jobs by model key. */
  private readonly active = new Map<string, Job>();

  constructor(opts: DownloadTrackerOptions) {
    this.catalog = opts.catalog;
    this.provisioner = opts.provisioner;
    this.clock = opts.clock ?? systemClock;
    this.logger = opts.logger ?? silentLogger;
    this.progressIntervalMs = opts.progressIntervalMs ?? 100;
    this.finishedJobTtlMs = opts.finishedJobTtlMs ?? 600_000;
    this.historySize = Math.max(2, opts.historySize ?? 100);
    this.speedWindowMs = opts.speedWindowMs ?? 3000;
    this.idFactory = opts.idFactory ?? (() => randomUUID());
    this.onLifecycle = opts.onLifecycle;
  }

  /**
   * Start (or join) the download of a model. Throws 400 INVALID_INPUT for a bad ref/revision, and
   * for `file:` refs the errors of Provisioner.registerLocal. Hub/plan errors (404, 403, ambiguous
   * choice, 507 …) arrive as the job's error event and reject `whenDone`; with `awaitPlan: true`
   * start() waits for the plan and throws them instead (the job is still recorded).
   */
  async start(givenRef: string, opts: { revision?: string; awaitPlan?: boolean } = {}): Promise<StartResult> {
    const parsed = parseModelRef(givenRef);
    const modelRef = parsed.modelRef; // canonical: one job and one catalog key per model
    const revisionArg = opts.revision === undefined ? undefined : validateRevision(opts.revision);
    if (parsed.provider === "file") {
      // Described afresh every time: the directory may have changed, and every file handed out
      // must still resolve inside the allowed roots. The catalog is only written when it differs.
      const input = await this.provisioner.registerLocal(modelRef);
      const existing = this.catalog.get(modelRef);
      if (existing && sameLocalModel(existing, input)) return { cached: true, local_path: existing.local_path, entry: existing };
      const entry = this.catalog.register(input);
      return { cached: true, local_path: entry.local_path, entry };
    }
    const revision = revisionArg ?? DEFAULT_REVISION;
    const key = `${modelRef}@${revision}`;
    const running = this.active.get(key);
    if (running) {
      if (opts.awaitPlan) await running.planned.promise;
      return { cached: false, job: this.info(running), joined: true };
    }
    const entry = this.catalog.get(modelRef, revisionArg);
    if (entry) {
      const check = this.catalog.checkOnDisk(entry);
      if (check.ok) return { cached: true, local_path: entry.local_path, entry };
      this.logger.warn("catalog entry lost files on disk; downloading again", { model_ref: modelRef, problems: check.problems });
      this.catalog.remove(modelRef, revisionArg);
    }
    const job = this.createJob(key, modelRef, revision, revisionArg);
    if (opts.awaitPlan) await job.planned.promise;
    return { cached: false, job: this.info(job), joined: false };
  }

  /** The catalog entry of a model: cached, or after joining/starting its download (spawn uses this). */
  async ensure(modelRef: string, opts: { revision?: string } = {}): Promise<CatalogEntry> {
    const r = await this.start(modelRef, opts);
    if (r.cached) return r.entry;
    return this.whenDone(r.job.id);
  }

  get(id: string): DownloadJobInfo | undefined {
    const job = this.lookup(id);
    return job ? this.info(job) : undefined;
  }

  list(): DownloadJobInfo[] {
    this.sweep();
    return [...this.jobs.values()].map((j) => this.info(j));
  }

  /**
   * Listen to a job's events. Missed events are replayed synchronously before this returns: those
   * with id > afterEventId, or (no id) the latest one. After the terminal event no more arrive.
   * Throws 404 DOWNLOAD_NOT_FOUND.
   */
  subscribe(id: string, afterEventId: number | undefined, listener: DownloadListener): () => void {
    const job = this.mustGet(id);
    const replay =
      afterEventId === undefined || !Number.isFinite(afterEventId)
        ? job.events.slice(-1)
        : job.events.filter((e) => e.id > afterEventId);
    for (const e of replay) this.deliver(job, listener, e);
    const terminal = job.state === "complete" || job.state === "error" || job.state === "cancelled";
    if (terminal) return () => {};
    job.listeners.add(listener);
    return () => {
      job.listeners.delete(listener);
    };
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
        this.provisioner.purgePartials(job.plan);
      } catch (e) {
        this.logger.warn("could not remove partial files", { download_id: id, error: errorMessage(e) });
      }
    }
    return this.info(job);
  }

  /** Resolves with the catalog entry when the job completes; rejects with its HiveError otherwise. */
  whenDone(id: string): Promise<CatalogEntry> {
    const job = this.lookup(id);
    if (!job) return Promise.reject(new HiveError(404, "DOWNLOAD_NOT_FOUND", `no download with id ${id}`));
    return job.done.promise;
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
      if (job.emitTimer) this.clock.clearTimeout(job.emitTimer);
      job.expiryTimer = job.emitTimer = null;
    }
  }

  // ------------------------------------------------------------------ internals

  private createJob(key: string, modelRef: string, revision: string, revisionArg: string | undefined): Job {
    const job: Job = {
      id: this.idFactory(),
      key,
      modelRef,
      revision,
      revisionArg,
      state: "planning",
      commit: null,
      startedAt: this.clock.now(),
      finishedAt: null,
      localPath: null,
      error: null,
      ctrl: new AbortController(),
      plan: null,
      events: [],
      nextEventId: 1,
      listeners: new Set(),
      progress: {
        phase: "verifying",
        bytes_downloaded: 0,
        bytes_total: 0,
        bytes_transferred: 0,
        file: "",
        files_done: 0,
        files_total: 0,
      },
      speedMbps: 0,
      samples: [],
      lastEmitAt: -Infinity,
      lastEmitted: "",
      emitTimer: null,
      expiryTimer: null,
      cancelRequested: false,
      shutdown: false,
      done: deferred<CatalogEntry>(),
      planned: deferred<void>(),
      settled: Promise.resolve(),
    };
    this.jobs.set(job.id, job);
    this.active.set(key, job);
    this.emit(job, { stage: "downloading", bytes_downloaded: 0, bytes_total: 0, speed_mbps: 0, phase: "planning" });
    job.settled = this.run(job);
    return job;
  }

  private async run(job: Job): Promise<void> {
    const signal = job.ctrl.signal;
    try {
      const plan = await this.provisioner.plan(job.modelRef, { revision: job.revisionArg, signal });
      job.plan = plan;
      job.commit = plan.commit;
      job.progress.bytes_total = plan.bytesTotal;
      job.progress.files_total = plan.files.length;
      job.planned.resolve();
      if (signal.aborted) throw signal.reason;
      job.state = "downloading";
      const result = await this.provisioner.provision(plan, {
        signal,
        onProgress: (p) => this.onProgress(job, p),
      });
      if (signal.aborted) throw signal.reason;
      // Registration is one transaction; `complete` goes out only once it is committed.
      const entry = this.catalog.register(result);
      job.state = "complete";
      job.localPath = entry.local_path;
      job.progress.bytes_downloaded = job.progress.bytes_total;
      job.progress.files_done = job.progress.files_total;
      this.flushProgress(job, true);
      this.emit(job, { stage: "complete", local_path: entry.local_path });
      job.done.resolve(entry);
    } catch (e) {
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
      if (job.emitTimer) this.clock.clearTimeout(job.emitTimer);
      job.emitTimer = null;
      this.emit(job, { stage: "error", message: err.message, code: err.code });
      job.planned.reject(err);
      job.done.reject(err);
    } finally {
      job.finishedAt = this.clock.now();
      if (this.active.get(job.key) === job) this.active.delete(job.key);
      job.listeners.clear();
      job.expiryTimer = this.clock.setTimeout(() => this.expire(job), this.finishedJobTtlMs);
    }
  }

  private onProgress(job: Job, p: ProvisionProgress): void {
    job.progress = p;
    const now = this.clock.monotonic();
    job.samples.push([now, p.bytes_transferred]);
    while (job.samples.length > 2 && now - job.samples[0]![0] > this.speedWindowMs) job.samples.shift();
    if (job.samples.length > 512) job.samples.splice(0, job.samples.length - 512);
    this.flushProgress(job, false);
  }

  /** Emit a progress event now if the interval allows (or `force`), else schedule a trailing one. */
  private flushProgress(job: Job, force: boolean): void {
    const now = this.clock.monotonic();
    const wait = this.progressIntervalMs - (now - job.lastEmitAt);
    if (!force && wait > 0) {
      if (!job.emitTimer) {
        job.emitTimer = this.clock.setTimeout(() => {
          job.emitTimer = null;
          if (job.finishedAt === null && job.state !== "complete") this.flushProgress(job, false);
        }, wait);
      }
      return;
    }
    if (job.emitTimer) {
      this.clock.clearTimeout(job.emitTimer);
      job.emitTimer = null;
    }
    const first = job.samples[0];
    const last = job.samples[job.samples.length - 1];
    if (first && last && last[0] > first[0]) {
      job.speedMbps = ((last[1] - first[1]) / (last[0] - first[0])) * 1000 / 1e6; // bytes/ms → MB/s
    }
    const p = job.progress;
    const data: ProgressEvent = {
      stage: "downloading",
      bytes_downloaded: p.bytes_downloaded,
      bytes_total: p.bytes_total,
      speed_mbps: Math.round(job.speedMbps * 100) / 100,
      file: p.file,
      files_done: p.files_done,
      files_total: p.files_total,
      phase: p.phase,
    };
    const sig = `${p.bytes_downloaded}/${p.bytes_total}/${p.files_done}/${p.phase}/${p.file}`;
    if (sig === job.lastEmitted) return;
    job.lastEmitted = sig;
    job.lastEmitAt = now;
    this.emit(job, data);
  }

  private emit(job: Job, data: ProgressEvent): void {
    const ev: TrackedEvent = { id: job.nextEventId++, data };
    job.events.push(ev);
    if (job.events.length > this.historySize) job.events.splice(0, job.events.length - this.historySize);
    for (const l of [...job.listeners]) this.deliver(job, l, ev);
    if (data.stage !== "downloading") this.notifyLifecycle(job, data);
    else if (ev.id === 1) this.notifyLifecycle(job, { stage: "started" });
  }

  private notifyLifecycle(job: Job, event: ProgressEvent | { stage: "started" }): void {
    try {
      this.onLifecycle?.(this.info(job), event);
    } catch (e) {
      this.logger.warn("download lifecycle listener failed", { err: errorMessage(e) });
    }
  }

  private deliver(job: Job, listener: DownloadListener, ev: TrackedEvent): void {
    try {
      listener(ev);
    } catch (e) {
      this.logger.warn("download listener threw", { download_id: job.id, error: errorMessage(e) });
    }
  }

  private expire(job: Job): void {
    job.expiryTimer = null;
    if (this.jobs.get(job.id) === job) this.jobs.delete(job.id);
  }

  /** Drop finished jobs past their TTL (works with clocks whose timers never fire). */
  private sweep(): void {
    const now = this.clock.now();
    for (const job of this.jobs.values()) {
      if (job.finishedAt !== null && now - job.finishedAt >= this.finishedJobTtlMs) {
        if (job.expiryTimer) this.clock.clearTimeout(job.expiryTimer);
        this.jobs.delete(job.id);
      }
    }
  }

  private lookup(id: string): Job | undefined {
    this.sweep();
    return this.jobs.get(id);
  }

  private mustGet(id: string): Job {
    const job = this.lookup(id);
    if (!job) throw new HiveError(404, "DOWNLOAD_NOT_FOUND", `no download with id ${id} (finished downloads are kept for ${Math.round(this.finishedJobTtlMs / 1000)} s)`);
    return job;
  }

  private info(job: Job): DownloadJobInfo {
    return {
      id: job.id,
      model_ref: job.modelRef,
      revision: job.revision,
      state: job.state,
      commit: job.commit,
      bytes_downloaded: job.progress.bytes_downloaded,
      bytes_total: job.progress.bytes_total,
      files_done: job.progress.files_done,
      files_total: job.progress.files_total,
      speed_mbps: Math.round(job.speedMbps * 100) / 100,
      started_at: job.startedAt,
      finished_at: job.finishedAt,
      local_path: job.localPath,
      error: job.error,
      subscribers: job.listeners.size,
      last_event_id: job.nextEventId - 1,
    };
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
