/** One download job: what it is, where it stands, its events, and the promises callers wait on. */
import type { Clock, Timer } from "../../shared/clock.ts";
import type { CatalogEntry } from "../model-catalog/catalog.ts";
import type { HfModelRef } from "../model-catalog/model-ref.ts";
import type { ModelPlan, ProvisionProgress } from "../provisioner/provisioner.ts";
import type { DownloadJobInfo, JobState, ProgressEvent } from "../schemas.ts";
import { EventLog } from "./event-log.ts";
import { ProgressThrottle, roundedSpeed } from "./progress-throttle.ts";

export interface Deferred<T> {
  promise: Promise<T>;
  resolve(v: T): void;
  reject(e: unknown): void;
}

export function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  promise.catch(() => {}); // rejections are for whoever awaits; never "unhandled"
  return { promise, resolve, reject };
}

export interface DownloadJobInit {
  id: string;
  ref: HfModelRef;
  /** The revision as given (undefined = the default): the catalog key uses it. */
  revisionArg: string | undefined;
  /** The revision downloaded (the default filled in). */
  revision: string;
  clock: Clock;
  progressIntervalMs: number;
  /** Every event of the job goes through here (the tracker numbers, fans out, notifies). */
  onEvent: (job: DownloadJob, data: ProgressEvent) => void;
  onListenerError: (job: DownloadJob, e: unknown) => void;
}

export class DownloadJob {
  readonly id: string;
  readonly ref: HfModelRef;
  readonly revisionArg: string | undefined;
  readonly revision: string;
  /** One job per model and revision. */
  readonly key: string;
  readonly startedAt: number;
  readonly ctrl = new AbortController();
  readonly events: EventLog;
  readonly throttle: ProgressThrottle;
  readonly done = deferred<CatalogEntry>();
  readonly planned = deferred<void>();
  state: JobState = "planning";
  finishedAt: number | null = null;
  localPath: string | null = null;
  error: { code: string; message: string } | null = null;
  plan: ModelPlan | null = null;
  progress: ProvisionProgress = { phase: "verifying", bytes_downloaded: 0, bytes_total: 0, bytes_transferred: 0, file: "", files_done: 0, files_total: 0 };
  cancelRequested = false;
  shutdown = false;
  expiryTimer: Timer | null = null;
  settled: Promise<void> = Promise.resolve();

  constructor(init: DownloadJobInit) {
    this.id = init.id;
    this.ref = init.ref;
    this.revisionArg = init.revisionArg;
    this.revision = init.revision;
    this.key = jobKey(init.ref.modelRef, init.revision);
    this.startedAt = init.clock.now();
    this.events = new EventLog((e) => init.onListenerError(this, e));
    this.throttle = new ProgressThrottle({
      clock: init.clock,
      intervalMs: init.progressIntervalMs,
      current: () => this.progress,
      active: () => this.finishedAt === null && this.state !== "complete",
      emit: (data) => init.onEvent(this, data),
    });
  }

  get modelRef(): string {
    return this.ref.modelRef;
  }

  get terminal(): boolean {
    return this.state === "complete" || this.state === "error" || this.state === "cancelled";
  }

  info(): DownloadJobInfo {
    return {
      id: this.id,
      model_ref: this.modelRef,
      revision: this.revision,
      state: this.state,
      commit: this.plan?.commit ?? null,
      bytes_downloaded: this.progress.bytes_downloaded,
      bytes_total: this.progress.bytes_total,
      files_done: this.progress.files_done,
      files_total: this.progress.files_total,
      speed_mbps: roundedSpeed(this.throttle.speedMbps),
      started_at: this.startedAt,
      finished_at: this.finishedAt,
      local_path: this.localPath,
      error: this.error,
      subscribers: this.events.listenerCount,
      last_event_id: this.events.lastId,
    };
  }
}

export function jobKey(modelRef: string, revision: string): string {
  return `${modelRef}@${revision}`;
}
