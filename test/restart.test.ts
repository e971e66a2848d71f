import { describe, expect, test } from "bun:test";
import { defaultConfig } from "../src/config.ts";
import { newRestartHistory, RestartPolicy } from "../src/workers/restart.ts";

const cfg = (over: Partial<ReturnType<typeof defaultConfig>["restart"]> = {}) => ({ ...defaultConfig("/h").restart, ...over });

describe("restart policy", () => {
  test("backoff is min(base·2^n, max), without jitter exactly", () => {
    const p = new RestartPolicy(cfg({ jitter: 0, base_backoff_s: 1, max_backoff_s: 60 }));
    expect([0, 1, 2, 3, 4, 5, 6, 7].map((n) => p.backoffMs(n))).toEqual([1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]);
  });

  test("jitter stays within ±jitter of the base", () => {
    const low = new RestartPolicy(cfg({ jitter: 0.2 }), () => 0);
    const high = new RestartPolicy(cfg({ jitter: 0.2 }), () => 0.999999);
    expect(low.backoffMs(2)).toBe(3200);
    expect(high.backoffMs(2)).toBe(4800);
    expect(low.backoffMs(10)).toBe(48000); // capped at 60 s, then jittered
  });

  test("scheduled delays grow with each attempt and the attempts are bounded in the window", () => {
    const p = new RestartPolicy(cfg({ jitter: 0, max_attempts: 3, window_s: 300, breaker_failures: 10 }));
    const h = newRestartHistory();
    const d1 = p.decide(h, "crashed", 0);
    const d2 = p.decide(h, "crashed", 5_000);
    const d3 = p.decide(h, "crashed", 10_000);
    expect([d1, d2, d3]).toEqual([
      { action: "restart", delayMs: 1000, attempt: 1 },
      { action: "restart", delayMs: 2000, attempt: 2 },
      { action: "restart", delayMs: 4000, attempt: 3 },
    ]);
    const d4 = p.decide(h, "crashed", 15_000);
    expect(d4.action).toBe("crash_loop");
    // Outside the window, attempts are allowed again.
    const h2 = newRestartHistory();
    p.decide(h2, "crashed", 0);
    p.decide(h2, "crashed", 1000);
    p.decide(h2, "crashed", 2000);
    expect(p.decide(h2, "crashed", 400_000)).toEqual({ action: "restart", delayMs: 1000, attempt: 1 });
  });

  test("the circuit breaker opens after N failures in its window", () => {
    const p = new RestartPolicy(cfg({ jitter: 0, max_attempts: 100, breaker_failures: 5, breaker_window_s: 300 }));
    const h = newRestartHistory();
    const decisions = [0, 1, 2, 3, 4].map((i) => p.decide(h, "killed", i * 1000));
    expect(decisions.slice(0, 4).every((d) => d.action === "restart")).toBe(true);
    expect(decisions[4]).toMatchObject({ action: "crash_loop" });
    expect((decisions[4] as { why: string }).why).toContain("circuit breaker open: 5 failures within 300 s");
  });

  test("counters reset after a healthy period of reset_after_s", () => {
    const p = new RestartPolicy(cfg({ jitter: 0, max_attempts: 2, reset_after_s: 300 }));
    const h = newRestartHistory();
    p.decide(h, "crashed", 0);
    p.markHealthy(h, 2_000);
    p.decide(h, "crashed", 10_000); // healthy only 8 s: counts
    p.markHealthy(h, 12_000);
    expect(p.decide(h, "crashed", 20_000).action).toBe("crash_loop");

    const h2 = newRestartHistory();
    p.decide(h2, "crashed", 0);
    p.decide(h2, "crashed", 1_000);
    p.markHealthy(h2, 5_000);
    // Ran healthy for 300 s: slate wiped, backoff starts over.
    expect(p.decide(h2, "crashed", 305_000)).toEqual({ action: "restart", delayMs: 1000, attempt: 1 });
  });

  test("load failures in a row stop restarts; a stop on request never restarts", () => {
    const p = new RestartPolicy(cfg({ jitter: 0, max_load_failures: 2 }));
    const h = newRestartHistory();
    expect(p.decide(h, "load_failed", 0).action).toBe("restart");
    const second = p.decide(h, "load_timeout", 1000);
    expect(second).toMatchObject({ action: "crash_loop" });
    expect((second as { why: string }).why).toContain("failed to load 2 times in a row");
    expect(p.decide(newRestartHistory(), "stopped", 0)).toEqual({ action: "none", why: "stopped on request" });
    expect(new RestartPolicy(cfg({ enabled: false })).decide(newRestartHistory(), "crashed", 0).action).toBe("none");
  });
});
