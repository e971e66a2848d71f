/**
 * Loading progress: while a worker is not ready, what the hive can see of it goes into its record
 * (`load_progress`) and the events stream (`loading_progress`), so a caller shows one bar from the
 * model download through the load to ready:
 *   - the model download (the hive's own download of the worker's model, bytes);
 *   - the worker's `progress_path` stream (llm-worker-rbee: `GET /v1/loading/progress`, SSE
 *     `{"stage":"loading_to_vram","layers_loaded","layers_total"}` … `{"stage":"ready"}` `[DONE]`),
 *     tried from launch until it answers (upstream workers only listen once loaded); a 404 means
 *     the worker has none;
 *   - otherwise its output: every line is the sign of life the stall timeout counts, relayed with
 *     the line itself.
 * Updates are throttled per worker (a stage change goes out at once, the newest value always last),
 * so a chatty load costs a few registry changes per second at most.
 */
import type { HiveBus } from "../events.ts";
import type { Clock, Timer } from "../shared/clock.ts";
import type { FetchLike } from "../shared/http-client.ts";
import type { Logger } from "../shared/logger.ts";
import { toSystemTime } from "../shared/rbee-types.ts";
import type { WorkerRegistry } from "./registry.ts";
import type { LoadProgress } from "./schemas.ts";
import { abortableSleep, localUrl } from "./worker-health.ts";

/** What the hive's download tracker says about a download (the fields used here). */
export interface DownloadProgressEvent {
  stage: string;
  bytes_downloaded?: number;
  bytes_total?: number;
  file?: string;
}

/** Subscribe to a download's events (replays the latest at once); returns the unsubscribe. */
export type DownloadProgressSource = (downloadId: string, listener: (event: DownloadProgressEvent) => void) => () => void;

export interface LoadingProgressOptions {
  registry: WorkerRegistry;
  bus: HiveBus;
  clock: Clock;
  logger: Logger;
  fetch?: FetchLike;
  /** LLORCH_API_TOKEN: the worker's progress route needs it like its other routes. */
  workerToken?: string;
  downloads?: DownloadProgressSource;
  /** Least time between two relayed updates of one worker (stage changes go out at once). */
  intervalMs?: number;
}

const DEFAULT_INTERVAL_MS = 1000;
/** Polling a progress route that does not answer yet: from this, doubling up to the max. */
const RETRY_MIN_MS = 50;
const RETRY_MAX_MS = 1000;
const MAX_DETAIL = 200;

type Progress = Omit<LoadProgress, "at">;

interface Relay {
  lastAt: number;
  last: Progress | null;
  pending: Progress | null;
  timer: Timer | null;
  /** The worker's own stream has spoken: output lines no longer count as progress. */
  fromWorker: boolean;
}

const empty = { worker_stage: null, done: null, total: null, unit: null, fraction: null, detail: null } as const;

/** The progress of a worker whose process was just started. */
export const startingProgress = (now: number): LoadProgress => ({ stage: "loading", source: "hive", ...empty, detail: "starting", at: toSystemTime(now) });
/** The progress of a worker that just became ready. */
export const readyProgress = (now: number): LoadProgress => ({ stage: "ready", source: "hive", ...empty, fraction: 1, at: toSystemTime(now) });

export class LoadingProgressRelay {
  private readonly relays = new Map<string, Relay>();
  private readonly fetchImpl: FetchLike;
  private readonly intervalMs: number;

  constructor(private readonly o: LoadingProgressOptions) {
    this.fetchImpl = o.fetch ?? fetch;
    this.intervalMs = o.intervalMs ?? DEFAULT_INTERVAL_MS;
  }

  /**
   * A worker process was started and loads: follow its progress stream (if its profile has one)
   * until `signal` aborts (ready, exit, stop).
   */
  watch(id: string, port: number, progressPath: string, signal: AbortSignal): void {
    this.end(id);
    const r: Relay = { lastAt: -Infinity, last: null, pending: null, timer: null, fromWorker: false };
    this.relays.set(id, r);
    signal.addEventListener("abort", () => this.relays.get(id) === r && this.end(id), { once: true });
    if (progressPath) void this.follow(id, `${localUrl(port)}${progressPath}`, signal);
  }

  /** A line of the loading worker's output: its sign of life, relayed unless its own stream reports. */
  output(id: string, line: string): void {
    const r = this.relays.get(id);
    if (!r || r.fromWorker) return;
    this.push(id, r, { stage: "loading", source: "output", ...empty, detail: line.length > MAX_DETAIL ? line.slice(0, MAX_DETAIL) : line });
  }

  /** Relay a download's progress into the worker waiting for it; returns the unsubscribe. */
  followDownload(id: string, downloadId: string): () => void {
    const r: Relay = { lastAt: -Infinity, last: null, pending: null, timer: null, fromWorker: false };
    this.relays.set(id, r);
    let unsubscribe: () => void = () => {};
    try {
      unsubscribe =
        this.o.downloads?.(downloadId, (e) => {
          if (e.stage !== "downloading" || this.relays.get(id) !== r) return;
          const done = e.bytes_downloaded ?? null;
          const total = e.bytes_total ?? null;
          this.push(id, r, {
            stage: "downloading",
            source: "download",
            ...empty,
            done,
            total,
            unit: "bytes",
            fraction: done !== null && total ? Math.min(1, done / total) : null,
            detail: e.file ?? null,
          });
        }) ?? unsubscribe;
    } catch (e) {
      this.o.logger.debug("no progress for the worker's download", { worker_id: id, download_id: downloadId, err: String(e) });
    }
    return () => {
      unsubscribe();
      if (this.relays.get(id) === r) this.end(id);
    };
  }

  /** Stop relaying for a worker: pending updates are dropped (its ready or exit record says the rest). */
  end(id: string): void {
    const r = this.relays.get(id);
    if (!r) return;
    if (r.timer) this.o.clock.clearTimeout(r.timer);
    this.relays.delete(id);
  }

  // ------------------------------------------------------------------ the worker's stream

  private async follow(id: string, url: string, signal: AbortSignal): Promise<void> {
    const headers: Record<string, string> = { accept: "text/event-stream" };
    if (this.o.workerToken) headers.authorization = `Bearer ${this.o.workerToken}`;
    let delay = RETRY_MIN_MS;
    while (!signal.aborted) {
      try {
        const res = await this.fetchImpl(url, { headers, signal });
        if (res.status === 404 || res.status === 405 || res.status === 501) {
          await res.body?.cancel();
          return; // this worker has no progress stream: its output is what there is
        }
        if (res.ok && res.body && (await this.readStream(id, res.body, signal))) return;
        if (!res.bodyUsed) await res.body?.cancel();
      } catch {
        // not listening yet, or the stream broke: try again
      }
      await abortableSleep(delay, signal);
      delay = Math.min(delay * 2, RETRY_MAX_MS);
    }
  }

  /** Relay each `data:` event; true once the stream said `[DONE]`. */
  private async readStream(id: string, body: ReadableStream<Uint8Array>, signal: AbortSignal): Promise<boolean> {
    const decoder = new TextDecoder();
    let buffered = "";
    for await (const chunk of body) {
      if (signal.aborted) return true;
      buffered += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, nl).replace(/\r$/, "");
        buffered = buffered.slice(nl + 1);
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return true;
        this.workerEvent(id, data);
      }
    }
    return false;
  }

  private workerEvent(id: string, data: string): void {
    const r = this.relays.get(id);
    if (!r) return;
    let e: Record<string, unknown>;
    try {
      e = JSON.parse(data);
    } catch {
      return;
    }
    if (typeof e?.stage !== "string") return;
    r.fromWorker = true;
    const num = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : null);
    const done = num(e.layers_loaded);
    const total = num(e.layers_total);
    const fraction = e.stage === "ready" ? 1 : done !== null && total ? Math.min(1, Math.max(0, done / total)) : null;
    this.push(id, r, {
      stage: "loading",
      source: "worker",
      ...empty,
      worker_stage: e.stage.slice(0, 64),
      done,
      total,
      unit: done !== null || total !== null ? "layers" : null,
      fraction,
    });
  }

  // ------------------------------------------------------------------ throttle and write

  private push(id: string, r: Relay, p: Progress): void {
    const now = this.o.clock.monotonic();
    const changed = !r.last || r.last.stage !== p.stage || r.last.source !== p.source || r.last.worker_stage !== p.worker_stage;
    if (changed || now - r.lastAt >= this.intervalMs) {
      if (r.timer) this.o.clock.clearTimeout(r.timer);
      r.timer = null;
      r.pending = null;
      this.write(id, r, p, now);
      return;
    }
    r.pending = p;
    r.timer ??= this.o.clock.setTimeout(() => {
      r.timer = null;
      const next = r.pending;
      r.pending = null;
      if (next && this.relays.get(id) === r) this.write(id, r, next, this.o.clock.monotonic());
    }, r.lastAt + this.intervalMs - now);
  }

  private write(id: string, r: Relay, p: Progress, now: number): void {
    r.last = p;
    r.lastAt = now;
    const w = this.o.registry.live(id);
    if (!w || w.state !== "loading") return;
    this.o.registry.update(id, { load_progress: { ...p, at: toSystemTime(this.o.clock.now()) } });
    this.o.bus.publish("loading_progress", { worker_id: id, ...p });
  }
}
