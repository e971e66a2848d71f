/** A clock the test moves by hand: timers fire only when `advance` passes their due time. */
import type { Clock, Timer } from "../src/shared/clock.ts";

export class ManualClock implements Clock {
  private offset = 0;
  private timers: Array<{ id: number; due: number; fn: () => void }> = [];
  private nextId = 1;

  constructor(private readonly base = 1_800_000_000_000) {}

  now = () => this.base + this.offset;
  monotonic = () => this.offset;

  setTimeout = (fn: () => void, ms: number): Timer => {
    const id = this.nextId++;
    this.timers.push({ id, due: this.offset + ms, fn });
    return { id };
  };

  clearTimeout = (t: Timer) => {
    this.timers = this.timers.filter((x) => x.id !== t.id);
  };

  /** Due times of pending timers, relative to now. */
  pending(): number[] {
    return this.timers.map((t) => t.due - this.offset).sort((a, b) => a - b);
  }

  advance(ms: number): void {
    const target = this.offset + ms;
    for (;;) {
      const due = this.timers.filter((t) => t.due <= target).sort((a, b) => a.due - b.due)[0];
      if (!due) break;
      this.timers = this.timers.filter((t) => t !== due);
      this.offset = due.due;
      due.fn();
    }
    this.offset = target;
  }
}
