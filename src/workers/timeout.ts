/**
 * Stall-aware loading deadline: any sign of life (worker output) pushes the stall deadline out,
 * but never past the hard cap. Upstream's fixed 30 s killed every large model.
 */
import type { Clock, Timer } from "../shared/clock.ts";

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
