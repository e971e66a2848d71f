/**
 * Stall-aware loading deadline: any sign of life (worker output) pushes the stall deadline out,
 * but never past the hard cap. Upstream's fixed 30 s killed every large model.
 */
import type { Clock, Timer } from "../shared/clock.ts";
import { fromSystemTime, type SystemTime } from "../shared/rbee-types.ts";

export type DeadlineKind = "stalled" | "hard_cap";

export class LoadDeadline {
  private timer: Timer | null = null;
  private stallAt: number;
  private readonly hardAt: number;
  private done = false;

  constructor(
    private readonly clock: Clock,
    private readonly stallMs: number,
    maxMs: number,
    private readonly onExpire: (kind: DeadlineKind, waitedMs: number) => void,
  ) {
    const now = clock.monotonic();
    this.stallAt = now + stallMs;
    this.hardAt = now + maxMs;
    this.started = now;
    this.arm();
  }

  private readonly started: number;

  /** Output was seen: the stall deadline moves (bounded by the hard cap). */
  touch(): void {
    if (this.done) return;
    this.stallAt = this.clock.monotonic() + this.stallMs;
  }

  cancel(): void {
    this.done = true;
    if (this.timer) this.clock.clearTimeout(this.timer);
    this.timer = null;
  }

  private arm(): void {
    if (this.done) return;
    const next = Math.min(this.stallAt, this.hardAt);
    this.timer = this.clock.setTimeout(() => this.check(), Math.max(0, next - this.clock.monotonic()));
  }

  private check(): void {
    if (this.done) return;
    const now = this.clock.monotonic();
    if (now >= this.hardAt || now >= this.stallAt) {
      this.done = true;
      this.onExpire(now >= this.hardAt ? "hard_cap" : "stalled", Math.round(now - this.started));
      return;
    }
    this.arm(); // touched meanwhile: sleep until the new deadline
  }
}

// ---------------------------------------------------------------------------------------------
// Idle timeout

/** What the idle reaper reads of a worker (a registry snapshot). */
interface IdleCandidate {
  readonly id: string;
  readonly state: string;
  readonly phase: string;
  readonly in_flight: number;
  readonly keep_alive_s: number | null;
  readonly last_activity: SystemTime;
  readonly ready_at: SystemTime | null;
}

export interface IdleReaperOptions {
  clock: Clock;
  /** Live workers (the registry's list). */
  workers: () => readonly IdleCandidate[];
  /** Every change of a worker record (the registry's onChange); returns the unsubscribe. */
  changes: (listener: (worker: IdleCandidate) => void) => () => void;
  /** [idle] check_interval_s, in ms. */
  checkIntervalMs: number;
  /** [idle] timeout_s (0 = never); a worker's keep_alive_s overrides it. */
  timeoutS: number;
  /** Stop this worker gracefully; it was idle `idleMs` against a timeout of `timeoutS`. */
  stopIdle: (id: string, idleMs: number, timeoutS: number) => void;
}


/**
 * Every `check_interval_s` each ready worker with nothing in flight whose last activity (a request
 * starting or finishing, a report; at least its becoming ready) is older than its idle timeout is
 * handed to `stopIdle`. Loading workers and workers with requests in flight are never touched, and
 * health checks and heartbeats are not activity: upstream reset the idle clock on every health
 * check, so its idle timeout never fired. Times come from the injected clock, and the checks only
 * run while some ready worker has an idle timeout (nothing is scheduled for a hive without one).
 */
export class IdleReaper {
  private timer: Timer | null = null;
  private unsubscribe: (() => void) | null = null;

  constructor(private readonly o: IdleReaperOptions) {}

  start(): void {
    if (this.unsubscribe) return;
    this.unsubscribe = this.o.changes((w) => this.seen(w));
    if (this.anyCandidate()) this.arm();
  }

  stop(): void {
    this.unsubscribe?.();
    this.unsubscribe = null;
    this.disarm();
  }

  /** One round (also what a test calls). */
  check(): void {
    const now = this.o.clock.now();
    for (const w of this.o.workers()) {
      if (w.state !== "idle" || w.phase !== "running" || w.in_flight > 0) continue;
      const timeoutS = w.keep_alive_s ?? this.o.timeoutS;
      if (timeoutS <= 0) continue;
      const since = Math.max(fromSystemTime(w.last_activity), w.ready_at ? fromSystemTime(w.ready_at) : -Infinity);
      const idleMs = now - since;
      if (idleMs >= timeoutS * 1000) this.o.stopIdle(w.id, idleMs, timeoutS);
    }
  }

  /** A ready worker with an idle timeout could become idle: the checks run while there is one. */
  private isCandidate(w: IdleCandidate): boolean {
    return w.phase === "running" && (w.keep_alive_s ?? this.o.timeoutS) > 0;
  }

  private anyCandidate(): boolean {
    return this.o.workers().some((w) => this.isCandidate(w));
  }

  /** O(1) for the frequent changes (requests on running workers); a scan only when one stops running. */
  private seen(w: IdleCandidate): void {
    if (this.isCandidate(w)) {
      if (!this.timer) this.arm();
    } else if (this.timer && !this.anyCandidate()) {
      this.disarm();
    }
  }

  private arm(): void {
    this.timer = this.o.clock.setTimeout(() => this.tick(), this.o.checkIntervalMs);
  }

  private disarm(): void {
    if (this.timer) this.o.clock.clearTimeout(this.timer);
    this.timer = null;
  }

  private tick(): void {
    this.timer = null;
    try {
      this.check();
    } finally {
      if (this.unsubscribe && !this.timer && this.anyCandidate()) this.arm();
    }
  }
}
