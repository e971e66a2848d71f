/**
 * Restart policy: bounded attempts within a window, exponential backoff with jitter, a circuit
 * breaker that parks a worker in `crash_loop` instead of restarting it forever, and counters that
 * reset after a stable healthy period. Pure logic: time and randomness are passed in.
 */
import type { HiveConfig } from "../config.ts";
import type { ExitReason } from "./schemas.ts";

export type RestartConfig = HiveConfig["restart"];

/** Per-worker memory of the policy. */
export interface RestartHistory {
  /** Times (ms) of restarts scheduled, for the attempts window. */
  attempts: number[];
  /** Times (ms) of unexpected exits, for the breaker window. */
  failures: number[];
  consecutiveLoadFailures: number;
  /** When the worker last became healthy (ready), or null while it is not. */
  healthySince: number | null;
}

export const newRestartHistory = (): RestartHistory => ({
  attempts: [],
  failures: [],
  consecutiveLoadFailures: 0,
  healthySince: null,
});

export type RestartDecision =
  | { action: "restart"; delayMs: number; attempt: number }
  | { action: "none"; why: string }
  | { action: "crash_loop"; why: string };

const LOAD_FAILURES: ReadonlySet<ExitReason> = new Set(["load_failed", "load_timeout"]);

export class RestartPolicy {
  constructor(
    private readonly cfg: RestartConfig,
    private readonly random: () => number = Math.random,
  ) {}

  /** Backoff before attempt n (0-based): min(base·2^n, max) ± jitter. */
  backoffMs(n: number): number {
    const base = Math.min(this.cfg.base_backoff_s * 2 ** n, this.cfg.max_backoff_s) * 1000;
    const spread = base * this.cfg.jitter * (this.random() * 2 - 1);
    return Math.max(0, Math.round(base + spread));
  }

  markHealthy(h: RestartHistory, now: number): void {
    h.healthySince = now;
    h.consecutiveLoadFailures = 0;
  }

  /** Decide what to do after an exit. Mutates the history (records the failure/attempt). */
  decide(h: RestartHistory, reason: ExitReason, now: number): RestartDecision {
    if (reason === "stopped") return { action: "none", why: "stopped on request" };
    if (reason === "idle") return { action: "none", why: "stopped by the idle timeout" };
    // A long healthy run wipes the slate before this failure is counted.
    if (h.healthySince !== null && now - h.healthySince >= this.cfg.reset_after_s * 1000) {
      h.attempts = [];
      h.failures = [];
    }
    h.healthySince = null;
    if (!this.cfg.enabled) return { action: "none", why: "restarts are disabled ([restart] enabled = false)" };

    h.failures = h.failures.filter((t) => now - t < this.cfg.breaker_window_s * 1000);
    h.failures.push(now);
    // A port conflict says nothing about whether the model loads: leave that count alone.
    if (reason !== "port_conflict") h.consecutiveLoadFailures = LOAD_FAILURES.has(reason) ? h.consecutiveLoadFailures + 1 : 0;

    if (this.cfg.max_load_failures > 0 && h.consecutiveLoadFailures >= this.cfg.max_load_failures) {
      return { action: "crash_loop", why: `failed to load ${h.consecutiveLoadFailures} times in a row (last: ${reason})` };
    }
    if (this.cfg.max_load_failures === 0 && LOAD_FAILURES.has(reason)) {
      return { action: "crash_loop", why: `failed to load (${reason}); load failures are not restarted` };
    }
    if (h.failures.length >= this.cfg.breaker_failures) {
      return {
        action: "crash_loop",
        why: `circuit breaker open: ${h.failures.length} failures within ${this.cfg.breaker_window_s} s (last: ${reason})`,
      };
    }
    h.attempts = h.attempts.filter((t) => now - t < this.cfg.window_s * 1000);
    if (h.attempts.length >= this.cfg.max_attempts) {
      return {
        action: "crash_loop",
        why: `${h.attempts.length} restarts within ${this.cfg.window_s} s, limit reached (last: ${reason})`,
      };
    }
    const attempt = h.attempts.length;
    h.attempts.push(now);
    return { action: "restart", delayMs: this.backoffMs(attempt), attempt: attempt + 1 };
  }
}
