/**
 * One value, loaded on demand and reused for `ttlMs`; callers that arrive while a load runs share
 * it (a burst of requests runs the detection tools once, also with a TTL of 0). A failed load is
 * not kept: the next caller tries again.
 */
import type { Clock } from "../shared/clock.ts";

export class TtlCache<T> {
  private value: { v: T; at: number } | null = null;
  private loading: Promise<T> | null = null;
  private generation = 0;

  constructor(
    private readonly load: () => Promise<T>,
    private readonly ttlMs: number,
    private readonly clock: Pick<Clock, "monotonic">,
  ) {}

  get(): Promise<T> {
    if (this.value && this.clock.monotonic() - this.value.at < this.ttlMs) return Promise.resolve(this.value.v);
    if (this.loading) return this.loading;
    const generation = this.generation;
    const p = this.load().then(
      (v) => {
        // A value loaded before invalidate() is handed to its waiters but not kept.
        if (generation === this.generation) this.value = { v, at: this.clock.monotonic() };
        return v;
      },
    );
    this.loading = p.finally(() => {
      if (this.loading === guarded) this.loading = null;
    });
    const guarded = this.loading;
    return guarded;
  }

  /** Forget the value: the next get() loads again (a load already running is not reused). */
  invalidate(): void {
    this.generation++;
    this.value = null;
    this.loading = null;
  }
}
