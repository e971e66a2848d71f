/**
 * What workers are doing: requests in flight per worker, its slots, and the bounded queue of
 * requests waiting for one. The record stays exact at every moment: each change (a request starts
 * or ends, a report, a queued request gets its slot) is ONE registry call, an update, or a
 * transition when the state flips between `idle` (a slot is free) and `busy` (none is).
 *
 * In flight = requests through the hive + what others report (queen-rbee talks to workers
 * directly). A worker's counting starts when it becomes ready (`started`) and ends with its process
 * (`ended`): a request still holding a slot of an ended process only stamps `last_activity` when it
 * finishes, it never counts against the next process.
 */
import type { Clock, Timer } from "../shared/clock.ts";
import { HiveError } from "../shared/errors.ts";
import { toSystemTime } from "../shared/rbee-types.ts";
import { unknownWorker, type WorkerPatch, type WorkerRegistry } from "./registry.ts";

export interface ActivityOptions {
  registry: WorkerRegistry;
  clock: Clock;
  /** [workers] queue_max: requests that may wait for a slot, per worker. */
  queueMax: number;
  /** [workers] queue_timeout_s, in ms. */
  queueTimeoutMs: number;
}

/** A slot held by one request; `release` frees it exactly once, whoever calls it how often. */
export interface SlotLease {
  release(): void;
}

/** 503 for a worker that cannot take requests now (loading, restarting, stopping, gone). */
export const workerNotReady = (id: string, why: string, details?: Record<string, unknown>) =>
  new HiveError(503, "WORKER_NOT_READY", `worker ${id} is not ready: ${why}`, details);

interface Waiter {
  resolve(lease: SlotLease): void;
  reject(e: unknown): void;
  timer: Timer;
  signal?: AbortSignal;
  onAbort?: () => void;
}

/** One running process of a worker. */
interface Tracker {
  total: number;
  /** Requests through the hive holding a slot. */
  own: number;
  /** In flight as last reported by others. */
  reported: number;
  queue: Waiter[];
  /** Resolved (true) once nothing is in flight: drains. */
  drains: Set<(drained: boolean) => void>;
  /** Moving average of request durations (ms), for Retry-After. */
  avgMs: number | null;
}

const newTracker = (total: number): Tracker => ({ total, own: 0, reported: 0, queue: [], drains: new Set(), avgMs: null });

/** Bounds of the Retry-After estimate, in seconds. */
const RETRY_AFTER_MIN_S = 1;
const RETRY_AFTER_MAX_S = 60;

export class WorkerActivity {
  private readonly trackers = new Map<string, Tracker>();

  constructor(private readonly o: ActivityOptions) {}

  /** The worker's process is ready with `total` slots: counting starts from zero. */
  started(id: string, total: number): void {
    this.ended(id);
    this.trackers.set(id, newTracker(total));
  }

  /**
   * Its process is gone (or being replaced): nothing is in flight on it any more, queued requests
   * are refused, drains end. Touches no record: the caller's own update says what it became.
   */
  ended(id: string): void {
    const t = this.trackers.get(id);
    if (!t) return;
    this.trackers.delete(id);
    this.rejectQueued(t, workerNotReady(id, "its process ended"));
    for (const done of t.drains) done(true);
    t.drains.clear();
  }

  /** Requests waiting for a slot of the worker now. */
  queued(id: string): number {
    return this.trackers.get(id)?.queue.length ?? 0;
  }

  /** Requests in flight on the worker now (through the hive and reported). */
  inFlight(id: string): number {
    const t = this.trackers.get(id);
    return t ? t.own + t.reported : 0;
  }

  /**
   * A slot for one request: at once when one is free and nobody waits, else after waiting in the
   * worker's queue. 429 WORKER_BUSY (with `retry_after_s`) when the queue is full or no slot freed
   * within `queue_timeout_s`; 503 WORKER_NOT_READY when the worker is not running. A request whose
   * caller goes away (`signal`) leaves the queue.
   */
  async acquire(id: string, signal?: AbortSignal): Promise<SlotLease> {
    const t = this.trackerOf(id);
    if (!t) throw workerNotReady(id, "it is not running");
    if (t.queue.length === 0 && t.own + t.reported < t.total) {
      const lease = this.take(id, t);
      this.apply(id, t);
      return lease;
    }
    if (t.queue.length >= this.o.queueMax) throw this.busy(id, t, `all ${t.total} slots are taken and ${t.queue.length} requests wait already`);
    return new Promise<SlotLease>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        signal,
        timer: this.o.clock.setTimeout(() => {
          if (!this.dequeue(t, waiter)) return;
          reject(this.busy(id, t, `no slot freed within ${this.o.queueTimeoutMs / 1000} s`));
        }, this.o.queueTimeoutMs),
      };
      if (signal) {
        waiter.onAbort = () => {
          if (this.dequeue(t, waiter)) reject(signal.reason ?? new Error("caller went away"));
        };
        signal.addEventListener("abort", waiter.onAbort, { once: true });
      }
      t.queue.push(waiter);
    });
  }

  /**
   * Activity reported by a caller that talks to the worker directly: `inFlight` is how many
   * requests it has there now (replacing its previous report); undefined is a touch. Either way
   * `last_activity` is now. A worker that is not running yet only gets the touch.
   */
  report(id: string, inFlight: number | undefined): void {
    if (!this.o.registry.live(id)) throw unknownWorker(id);
    const t = this.trackerOf(id);
    if (t && inFlight !== undefined) {
      t.reported = inFlight;
      this.pump(id, t);
    }
    this.apply(id, t);
  }

  /**
   * Resolves true once nothing is in flight on the worker (at once when nothing is), false when
   * `timeoutMs` passed first. Queued requests are refused: a worker being drained takes no more.
   */
  drain(id: string, timeoutMs: number): Promise<boolean> {
    const t = this.trackers.get(id);
    if (!t) return Promise.resolve(true);
    this.rejectQueued(t, workerNotReady(id, "it is stopping"));
    if (t.own + t.reported === 0) return Promise.resolve(true);
    return new Promise<boolean>((resolve) => {
      const done = (drained: boolean) => {
        this.o.clock.clearTimeout(timer);
        t.drains.delete(done);
        resolve(drained);
      };
      const timer = this.o.clock.setTimeout(() => done(false), timeoutMs);
      t.drains.add(done);
    });
  }

  // ------------------------------------------------------------------ internals

  /**
   * The counts of a running worker; one that runs without having become ready here (adopted from
   * a previous hive) starts counting from its record's slots.
   */
  private trackerOf(id: string): Tracker | undefined {
    const known = this.trackers.get(id);
    if (known) return known;
    const w = this.o.registry.live(id);
    if (!w || w.state === "loading" || w.phase !== "running") return undefined;
    const t = newTracker(w.slots_total);
    this.trackers.set(id, t);
    return t;
  }

  /** Count one more request on `t` and hand out its lease (the caller applies the change). */
  private take(id: string, t: Tracker): SlotLease {
    t.own++;
    const startedAt = this.o.clock.monotonic();
    let released = false;
    return {
      release: () => {
        if (released) return;
        released = true;
        if (this.trackers.get(id) !== t) {
          // Its process ended meanwhile: the request still finished now.
          this.apply(id, undefined);
          return;
        }
        t.own--;
        const ms = this.o.clock.monotonic() - startedAt;
        t.avgMs = t.avgMs === null ? ms : t.avgMs * 0.8 + ms * 0.2;
        this.pump(id, t);
        this.apply(id, t);
      },
    };
  }

  /** Hand free slots to the queue, first come first served. */
  private pump(id: string, t: Tracker): void {
    while (t.queue.length > 0 && t.own + t.reported < t.total) {
      const waiter = t.queue.shift()!;
      this.settle(waiter);
      waiter.resolve(this.take(id, t));
    }
  }

  /** Activity now: the counts and last_activity into the record in one registry call (idle ↔ busy by the transition table). */
  private apply(id: string, t: Tracker | undefined): void {
    const w = this.o.registry.live(id);
    if (!w) return;
    const patch: WorkerPatch = { last_activity: toSystemTime(this.o.clock.now()) };
    if (!t || w.state === "loading") {
      this.o.registry.update(id, patch);
      return;
    }
    const inFlight = t.own + t.reported;
    patch.in_flight = inFlight;
    patch.slots_available = Math.max(0, t.total - inFlight);
    const state = patch.slots_available === 0 ? "busy" : "idle";
    this.o.registry.transition(id, state, patch);
    if (inFlight === 0) for (const done of [...t.drains]) done(true);
  }

  private busy(id: string, t: Tracker, why: string): HiveError {
    // A slot frees after about one request's time; each request queued ahead takes one slot's share.
    const waitMs = (t.avgMs ?? 1000) * ((t.queue.length + 1) / t.total);
    const retryAfter = Math.min(RETRY_AFTER_MAX_S, Math.max(RETRY_AFTER_MIN_S, Math.ceil(waitMs / 1000)));
    return new HiveError(429, "WORKER_BUSY", `worker ${id} is busy: ${why}`, { retry_after_s: retryAfter, slots_total: t.total, queued: t.queue.length });
  }

  private dequeue(t: Tracker, waiter: Waiter): boolean {
    const i = t.queue.indexOf(waiter);
    if (i < 0) return false;
    t.queue.splice(i, 1);
    this.settle(waiter);
    return true;
  }

  private settle(waiter: Waiter): void {
    this.o.clock.clearTimeout(waiter.timer);
    if (waiter.onAbort) waiter.signal?.removeEventListener("abort", waiter.onAbort);
  }

  private rejectQueued(t: Tracker, error: HiveError): void {
    for (const waiter of t.queue.splice(0)) {
      this.settle(waiter);
      waiter.reject(error);
    }
  }
}
