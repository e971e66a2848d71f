/** Time source passed into services so tests can drive time instead of sleeping. */
export interface Clock {
  /** Milliseconds since the Unix epoch (wall clock, used for timestamps shown to callers). */
  now(): number;
  /** Monotonic milliseconds, used for durations and deadlines. */
  monotonic(): number;
  setTimeout(fn: () => void, ms: number): Timer;
  clearTimeout(t: Timer): void;
}

export type Timer = { readonly id: unknown };

export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
  setTimeout: (fn, ms) => ({ id: setTimeout(fn, ms) }),
  clearTimeout: (t) => clearTimeout(t.id as ReturnType<typeof setTimeout>),
};

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
