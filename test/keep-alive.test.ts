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
    expect(back.exits[0].message).toContain("consecutive failed health checks");
    expect(back.last_restart).not.toBeNull();
    const types = events.filter((e) => e.data.worker_id === worker_id).map((e) => e.type);
    const unhealthyAt = types.indexOf("unhealthy");
    expect(types.slice(0, unhealthyAt).filter((t) => t === "health_failed")).toHaveLength(3);
    expect(types.slice(unhealthyAt)).toEqual(expect.arrayContaining(["exited", "restarting", "spawned", "ready"]));
    await waitFor(() => forwarded.length >= 2, { what: "two ready forwards" });
    expect(forwarded[0]).toEqual({
      auth: `Bearer ${TOKEN}`,
      body: { worker_id, url: first.url, model_ref: h.modelRef, backend: "cpu" },
    });
    expect(forwarded[1]!.body.worker_id).toBe(worker_id);
  });

  test("a slow /health on one worker does not delay checks of the others", async () => {
    const h = await hive({
      config: {
        monitor: { interval_s: 0.05, timeout_s: 5, failure_threshold: 3 },
        restart: { enabled: false },
        workers: {
          profiles: {
            slow: { env: { FAKE_WORKER_HEALTH_DELAY_MS: "0", FAKE_WORKER_HEALTH_HANG_AFTER_MS: "100" } },
            sick: { env: { FAKE_WORKER_UNHEALTHY_AFTER_MS: "100" } },
          },
        },
      },
    });
    const slow = await h.spawn({ profile: "slow" });
    await h.waitState(slow.worker_id, (w) => w.state === "idle", "slow idle");
    await Bun.sleep(200); // its /health now hangs; the monitor's check of it stays in flight (5 s timeout)
    const events: any[] = [];
    h.bus.subscribe((e) => events.push({ ...e, at: performance.now() }));
    const sick = await h.spawn({ profile: "sick" });
    await h.waitState(sick.worker_id, (w) => w.state === "idle", "sick idle");
    const readyAt = performance.now();
    const unhealthy = await waitFor(() => events.find((e) => e.type === "unhealthy" && e.data.worker_id === sick.worker_id), {
      what: "sick worker declared unhealthy",
      timeoutMs: 3000,
    });
    // 100 ms until it turns sick + 3 checks at 50 ms: far below the slow worker's 5 s timeout.
    expect(unhealthy.at - readyAt).toBeLessThan(1500);
    const slowNow: any = await (await h.api(`/v1/workers/${slow.worker_id}`)).json();
    expect(slowNow.state).toBe("idle"); // still within its timeout: not declared unhealthy
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
    expect(back.exits[0].message).toContain("no heartbeat");
  });

  test("loading workers are left alone by the monitor", async () => {
    const h = await hive({
      config: { monitor: { ...fastMonitor, failure_threshold: 1 } },
      workerEnv: { FAKE_WORKER_NO_CALLBACK: "1" },
    });
    const { worker_id } = await h.spawn();
    await Bun.sleep(300);
    const w: any = await (await h.api(`/v1/workers/${worker_id}`)).json();
    expect(w).toMatchObject({ state: "loading", failed_health_checks: 0, last_exit: null });
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
      config: { restart: { enabled: true, base_backoff_s: 1, max_backoff_s: 60, jitter: 0, max_attempts: 10, breaker_failures: 10, reset_after_s: 300 } },
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
    const h = await hive({
      config: { restart: { ...fastRestart, breaker_failures: 3, breaker_window_s: 60 } },
      workerEnv: { FAKE_WORKER_CRASH_AFTER_MS: "30" },
    });
    const { worker_id } = await h.spawn();
    const parked = await h.waitState(worker_id, (w) => w.phase === "crash_loop", "crash_loop", 8000);
    expect(parked).toMatchObject({ state: "loading", next_restart_at: null, pid: null, restart_count: 2 });
    expect(parked.crash_loop_reason).toContain("circuit breaker open: 3 failures");
    expect(parked.exits).toHaveLength(3);
    expect(parked.exits.every((e: any) => e.reason === "crashed" && e.code === 1)).toBe(true);
    const { workers }: any = await (await h.api("/v1/workers/list")).json();
    expect(workers.map((w: any) => w.id)).toContain(worker_id);
    await Bun.sleep(200);
    expect(((await (await h.api(`/v1/workers/${worker_id}`)).json()) as any).restart_count).toBe(2); // no more restarts

    const retry = await h.api(`/v1/workers/${worker_id}/restart`, { method: "POST" });
    expect(retry.status).toBe(200);
    const retried = await h.waitState(worker_id, (w) => w.restart_count === 3, "operator retry");
    expect(retried.crash_loop_reason).toBeNull();

    // The operator can also make it go away for good.
    await h.waitState(worker_id, (w) => w.phase === "crash_loop", "crash_loop again", 8000);
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
    expect(parked.crash_loop_reason).toContain("failed to load 2 times in a row");
    expect(parked.last_exit.stderr_tail.join("\n")).toContain("failed to load model");
  });

  test("a worker stopped via the API is never restarted", async () => {
    const h = await hive({ config: { restart: fastRestart } });
    const events: string[] = [];
    h.bus.subscribe((e) => events.push(e.type));
    const { worker_id } = await h.spawn();
    await h.waitState(worker_id, (w) => w.state === "idle", "idle");
    const res = await h.api("/v1/workers/stop", { json: { worker_id } });
    expect(res.status).toBe(200);
    await Bun.sleep(300);
    const w: any = await (await h.api(`/v1/workers/${worker_id}`)).json();
    expect(w).toMatchObject({ phase: "exited", restart_count: 0 });
    expect(events.filter((t) => t === "spawned")).toHaveLength(1);
    expect(events).not.toContain("restarting");
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
