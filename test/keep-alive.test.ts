/** Monitor + restart policy with real worker processes: workers are kept alive, within bounds. */
import { afterEach, describe, expect, test } from "bun:test";
import { startTestHive, waitFor, type TestHive } from "./helpers.ts";
import { ManualClock } from "./manual-clock.ts";

const hives: TestHive[] = [];
const servers: Array<{ stop(force?: boolean): unknown }> = [];
afterEach(async () => {
  await Promise.all(hives.splice(0).map((h) => h.close()));
  servers.splice(0).forEach((s) => s.stop(true));
});

async function hive(opts: Parameters<typeof startTestHive>[0] = {}) {
  const h = await startTestHive(opts);
  hives.push(h);
  return h;
}

const fastRestart = { enabled: true, base_backoff_s: 0, jitter: 0, max_attempts: 10, breaker_failures: 10 };
const fastMonitor = { interval_s: 0.05, timeout_s: 0.5, failure_threshold: 3 };
const millis = (st: { secs_since_epoch: number; nanos_since_epoch: number }) => st.secs_since_epoch * 1000 + st.nanos_since_epoch / 1e6;

describe("health monitor", () => {
  test("failing /health → stopped and restarted with the same id; queen hears about it again", async () => {
    const TOKEN = "queen-token-0123456789";
    const forwarded: Array<{ auth: string | null; body: any }> = [];
    const queen = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      async fetch(req) {
        if (new URL(req.url).pathname === "/v2/workers/ready") forwarded.push({ auth: req.headers.get("authorization"), body: await req.json() });
        return new Response("ok");
      },
    });
    servers.push(queen);
    const h = await hive({
      token: TOKEN,
      config: { monitor: fastMonitor, restart: fastRestart },
      env: { QUEEN_CALLBACK_URL: `http://127.0.0.1:${queen.port}` },
      workerEnv: { FAKE_WORKER_UNHEALTHY_AFTER_MS: "150" },
    });
    const events: any[] = [];
    h.bus.subscribe((e) => events.push(e));
    const { worker_id } = await h.spawn();
    const first = await h.waitState(worker_id, (w) => w.state === "idle", "idle");
    const back = await h.waitState(worker_id, (w) => w.restart_count >= 1 && w.state === "idle", "restarted and idle", 5000);
    expect(back.id).toBe(worker_id);
    expect(back.pid).not.toBe(first.pid);
    expect(back.exits[0]).toMatchObject({ reason: "unhealthy" });
    expect(back.exits[0].message).toMatch(/^unhealthy: 3 consecutive failed health checks \(last: GET \/health answered 500 \{"status":"unhealthy","vram_bytes":0\}\)/);
    expect(back.last_restart).not.toBeNull();
    // Loading progress (relayed while it loads again) aside.
    const types = events.filter((e) => e.data.worker_id === worker_id && e.type !== "loading_progress").map((e) => e.type);
    const unhealthyAt = types.indexOf("unhealthy");
    expect(types.slice(0, unhealthyAt).filter((t) => t === "health_failed")).toHaveLength(3);
    // A check already in flight may still report a failure before the exit; nothing else may come between.
    expect(types.slice(unhealthyAt).filter((t) => t !== "health_failed").slice(0, 6)).toEqual(["unhealthy", "exited", "restarting", "spawned", "callback", "ready"]);
    await waitFor(() => forwarded.length >= 2, { what: "two ready forwards" });
    expect(forwarded[0]).toEqual({
      auth: `Bearer ${TOKEN}`,
      body: { worker_id, url: first.url, model_ref: h.modelRef, backend: "cpu" },
    });
    expect(forwarded[1]).toEqual({ auth: `Bearer ${TOKEN}`, body: { worker_id, url: back.url, model_ref: h.modelRef, backend: "cpu" } });
  });

  test("a slow /health on one worker does not delay checks of the others", async () => {
    const h = await hive({
      config: {
        // The slow worker's check may hang for a minute: far beyond any wait below.
        monitor: { interval_s: 0.05, timeout_s: 60, failure_threshold: 3 },
        restart: { enabled: false },
        workers: {
          profiles: {
            slow: { env: { FAKE_WORKER_HEALTH_HANG_AFTER_MS: "100" } },
            sick: { env: { FAKE_WORKER_UNHEALTHY_AFTER_MS: "100" } },
          },
        },
      },
    });
    const slow = await h.spawn({ profile: "slow" });
    await h.waitState(slow.worker_id, (w) => w.state === "idle", "slow idle");
    // Its /health now hangs and the monitor's check of it stays in flight (60 s timeout).
    const inFlight = (h.monitor as unknown as { inFlight: Set<string> }).inFlight;
    await waitFor(() => inFlight.has(slow.worker_id), { what: "a hanging check of the slow worker" });
    const events: any[] = [];
    h.bus.subscribe((e) => events.push(e));
    const sick = await h.spawn({ profile: "sick" });
    await h.waitState(sick.worker_id, (w) => w.state === "idle", "sick idle");
    // Declared unhealthy while the slow worker's check still hangs: the checks did not queue.
    await waitFor(() => events.find((e) => e.type === "unhealthy" && e.data.worker_id === sick.worker_id), {
      what: "sick worker declared unhealthy",
      timeoutMs: 10_000,
    });
    expect(inFlight.has(slow.worker_id)).toBe(true);
    expect(events.filter((e) => e.type === "health_failed" && e.data.worker_id === sick.worker_id).map((e) => e.data.failures)).toEqual([1, 2, 3]);
    const slowNow: any = await (await h.api(`/v1/workers/${slow.worker_id}`)).json();
    expect(slowNow).toMatchObject({ state: "idle", failed_health_checks: 0 }); // still within its timeout
  });

  test("a worker whose heartbeats stop is replaced", async () => {
    const h = await hive({
      config: { monitor: { ...fastMonitor, heartbeat_stale_s: 0.3 }, restart: fastRestart },
      workerEnv: { FAKE_WORKER_HEARTBEAT_MS: "50", FAKE_WORKER_STOP_HEARTBEAT_AFTER_MS: "100" },
    });
    const { worker_id } = await h.spawn();
    await h.waitState(worker_id, (w) => w.state === "idle", "idle");
    const back = await h.waitState(worker_id, (w) => w.restart_count >= 1, "replaced", 5000);
    expect(back.exits[0].reason).toBe("unhealthy");
    expect(back.exits[0].message).toMatch(/^unhealthy: no heartbeat for \d+(\.\d)? s \(heartbeat_stale_s = 0\.3\)/);
  });

  test("loading workers are left alone by the monitor", async () => {
    // Monitor rounds are run by hand (tick), so "left alone" is not "not yet looked at".
    const h = await hive({
      config: {
        monitor: { interval_s: 3600, timeout_s: 5, failure_threshold: 1 },
        workers: {
          profiles: {
            silent: { env: { FAKE_WORKER_NO_CALLBACK: "1" } }, // loading, phase starting
            neverhealthy: { env: { FAKE_WORKER_UNHEALTHY_AFTER_MS: "0" } }, // loading, phase confirming, /health 500
            sick: { env: { FAKE_WORKER_UNHEALTHY_AFTER_MS: "100" } }, // running, then /health 500
          },
        },
      },
    });
    const events: any[] = [];
    h.bus.subscribe((e) => events.push(e));
    const silent = await h.spawn({ profile: "silent" });
    const never = await h.spawn({ profile: "neverhealthy" });
    const sick = await h.spawn({ profile: "sick" });
    await h.waitState(silent.worker_id, (w) => w.phase === "starting", "starting");
    await h.waitState(never.worker_id, (w) => w.phase === "confirming", "confirming");
    const running = await h.waitState(sick.worker_id, (w) => w.state === "idle", "sick idle");
    await waitFor(async () => (await fetch(`${running.url}/health`)).status === 500, { what: "sick worker's /health failing" });
    await h.monitor.tick();
    await h.monitor.tick();
    // The running one was checked (and replaced at the first failure); the loading ones were not.
    expect(events.filter((e) => e.type === "health_failed").map((e) => e.data.worker_id)).toEqual([sick.worker_id]);
    expect(events.filter((e) => e.type === "unhealthy").map((e) => e.data.worker_id)).toEqual([sick.worker_id]);
    for (const id of [silent.worker_id, never.worker_id]) {
      const w: any = await (await h.api(`/v1/workers/${id}`)).json();
      expect(w).toMatchObject({ state: "loading", failed_health_checks: 0, last_exit: null });
    }
  });

  test("max_attempts stops the restarts of a really crashing worker, within window_s", async () => {
    const clock = new ManualClock();
    const h = await hive({
      config: { restart: { enabled: true, max_attempts: 2, window_s: 300, base_backoff_s: 1, max_backoff_s: 60, jitter: 0, breaker_failures: 10 } },
      workerEnv: { FAKE_WORKER_CRASH_AFTER_MS: "30" },
      overrides: { clock },
    });
    const { worker_id } = await h.spawn();
    for (let attempt = 1; attempt <= 2; attempt++) {
      const w = await h.waitState(worker_id, (x) => x.phase === "restarting" && x.restart_count === attempt - 1, `restart ${attempt} scheduled`);
      clock.advance(millis(w.next_restart_at) - clock.now());
    }
    const parked = await h.waitState(worker_id, (w) => w.phase === "crash_loop", "crash_loop");
    expect(parked).toMatchObject({
      state: "loading",
      pid: null,
      restart_count: 2,
      next_restart_at: null,
      crash_loop_reason: "2 restarts within 300 s, limit reached (last: crashed)",
    });
    expect(parked.exits.map((e: any) => [e.reason, e.code])).toEqual([["crashed", 1], ["crashed", 1], ["crashed", 1]]);
    expect(clock.pending()).toEqual([]); // nothing left that could restart it
  });
});

describe("restart policy in action", () => {
  test("backoff grows and is capped (scheduled times from an injected clock)", async () => {
    const clock = new ManualClock();
    const h = await hive({
      config: { restart: { enabled: true, base_backoff_s: 1, max_backoff_s: 3, jitter: 0, max_attempts: 10, breaker_failures: 10 } },
      workerEnv: { FAKE_WORKER_CRASH_AFTER_MS: "50" },
      overrides: { clock },
    });
    const { worker_id } = await h.spawn();
    const delays: number[] = [];
    for (let attempt = 1; attempt <= 4; attempt++) {
      const w = await h.waitState(worker_id, (x) => x.phase === "restarting" && x.restart_count === attempt - 1, `restart ${attempt} scheduled`);
      delays.push(millis(w.next_restart_at) - clock.now());
      expect(clock.pending()).toContain(delays.at(-1)!);
      clock.advance(delays.at(-1)!);
      await h.waitState(worker_id, (x) => x.restart_count === attempt, `restart ${attempt} done`);
    }
    expect(delays).toEqual([1000, 2000, 3000, 3000]);
  });

  test("counters reset after reset_after_s of healthy running (injected clock)", async () => {
    const clock = new ManualClock();
    const h = await hive({
      // The long healthy run below is also a long idle one: no idle timeout here.
      config: { restart: { enabled: true, base_backoff_s: 1, max_backoff_s: 60, jitter: 0, max_attempts: 10, breaker_failures: 10, reset_after_s: 300 }, idle: { timeout_s: 0 } },
      overrides: { clock },
    });
    const { worker_id } = await h.spawn();
    const killAndReadDelay = async (restarts: number) => {
      const w = await h.waitState(worker_id, (x) => x.state === "idle" && x.restart_count === restarts, `idle after ${restarts} restarts`);
      process.kill(w.pid, "SIGKILL");
      const r = await h.waitState(worker_id, (x) => x.phase === "restarting" && x.restart_count === restarts, "restart scheduled");
      const delay = millis(r.next_restart_at) - clock.now();
      clock.advance(delay);
      return delay;
    };
    expect(await killAndReadDelay(0)).toBe(1000);
    expect(await killAndReadDelay(1)).toBe(2000); // quick second failure: backoff grows
    await h.waitState(worker_id, (x) => x.state === "idle" && x.restart_count === 2, "idle");
    clock.advance(300_000); // a long healthy run
    expect(await killAndReadDelay(2)).toBe(1000); // slate wiped
  });

  test("the circuit breaker parks a crash-looping worker, visible with its reason, until an operator retries", async () => {
    const clock = new ManualClock();
    const h = await hive({
      config: { restart: { ...fastRestart, breaker_failures: 3, breaker_window_s: 60 } },
      workerEnv: { FAKE_WORKER_CRASH_AFTER_MS: "30" },
      overrides: { clock },
    });
    /** Let each zero-backoff restart happen (the injected clock only moves when told) until parked. */
    const untilParked = async (from: number) => {
      for (let n = from; ; n++) {
        const w = await h.waitState(worker_id, (x) => x.phase === "crash_loop" || (x.phase === "restarting" && x.restart_count === n), `restart ${n + 1} or crash_loop`);
        if (w.phase === "crash_loop") return w;
        clock.advance(0);
      }
    };
    const { worker_id } = await h.spawn();
    const parked = await untilParked(0);
    expect(parked).toMatchObject({
      state: "loading",
      next_restart_at: null,
      pid: null,
      restart_count: 2,
      crash_loop_reason: "circuit breaker open: 3 failures within 60 s (last: crashed)",
    });
    expect(parked.exits.map((e: any) => [e.reason, e.code])).toEqual([["crashed", 1], ["crashed", 1], ["crashed", 1]]);
    const { workers }: any = await (await h.api("/v1/workers/list")).json();
    expect(workers.map((w: any) => w.id)).toContain(worker_id);
    expect(clock.pending()).toEqual([]); // no restart is scheduled: none can come

    const retry = await h.api(`/v1/workers/${worker_id}/restart`, { method: "POST" });
    expect(retry.status).toBe(200);
    const retried = await h.waitState(worker_id, (w) => w.restart_count === 3, "operator retry");
    expect(retried.crash_loop_reason).toBeNull();

    // The operator can also make it go away for good.
    await untilParked(3);
    const stop = await h.api(`/v1/workers/${worker_id}`, { method: "DELETE" });
    expect(stop.status).toBe(200);
    expect(((await (await h.api("/v1/workers/list")).json()) as any).workers).toHaveLength(0);
  });

  test("a worker that keeps failing during load stops being restarted", async () => {
    const h = await hive({
      config: { restart: { ...fastRestart, max_load_failures: 2 } },
      workerEnv: { FAKE_WORKER_FAIL_LOAD: "1" },
    });
    const { worker_id } = await h.spawn();
    const parked = await h.waitState(worker_id, (w) => w.phase === "crash_loop", "crash_loop");
    expect(parked.restart_count).toBe(1);
    expect(parked.crash_loop_reason).toBe("failed to load 2 times in a row (last: load_failed)");
    // The log file holds stdout and stderr: two INFO lines come first.
    expect(parked.last_exit.stderr_tail.slice(2, 4)).toEqual([
      `error: failed to load model ${h.modelRef.slice("file:".length)}`,
      "error: failed to load model: GGUF header invalid (fake, FAKE_WORKER_FAIL_LOAD)",
    ]);
  });

  test("a worker stopped via the API is never restarted", async () => {
    const clock = new ManualClock();
    const h = await hive({ config: { restart: fastRestart }, overrides: { clock } });
    const events: string[] = [];
    h.bus.subscribe((e) => e.type !== "loading_progress" && events.push(e.type)); // its output while it loads aside
    const { worker_id } = await h.spawn();
    await h.waitState(worker_id, (w) => w.state === "idle", "idle");
    const res = await h.api("/v1/workers/stop", { json: { worker_id } });
    expect(res.status).toBe(200);
    // The restart decision is taken when the exit is seen, before the stop answers: nothing is
    // scheduled on the clock, and the events end with the stop.
    expect(clock.pending()).toEqual([]);
    expect(events).toEqual(["spawned", "callback", "ready", "exited", "stopped"]);
    const w: any = await (await h.api(`/v1/workers/${worker_id}`)).json();
    expect(w).toMatchObject({ phase: "exited", restart_count: 0, last_exit: { reason: "stopped" } });
  });

  test("a crashed worker restarts on its old port when it is still free", async () => {
    const h = await hive({ config: { restart: fastRestart } });
    const { worker_id, url } = await h.spawn();
    const idle = await h.waitState(worker_id, (w) => w.state === "idle", "idle");
    process.kill(idle.pid, "SIGKILL");
    const back = await h.waitState(worker_id, (w) => w.restart_count === 1 && w.state === "idle", "back");
    expect(back.url).toBe(url);
    expect(back.exits[0]).toMatchObject({ reason: "killed", signal: "SIGKILL" });
  });
});
