/**
 * The idle timeout ([idle] timeout_s, per spawn keep_alive_s) with real fake-worker processes and a
 * manual clock: the reaper's checks run inside `clock.advance`, so what it decided is visible the
 * moment advance returns, without waiting for anything that should not happen.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { ManualClock } from "./manual-clock.ts";
import { groupMembers, pidAlive, startTestHive, type TestHive } from "./helpers.ts";

const hives: TestHive[] = [];
afterEach(async () => {
  await Promise.all(hives.splice(0).map((h) => h.close()));
});

const IDLE = { timeout_s: 10, check_interval_s: 1 };

async function hive(opts: Parameters<typeof startTestHive>[0] = {}) {
  const h = await startTestHive(opts);
  hives.push(h);
  return h;
}

async function idleWorker(h: TestHive, body: Record<string, unknown> = {}) {
  const { worker_id } = await h.spawn(body);
  return h.waitState(worker_id, (w) => w.state === "idle", "idle");
}

const record = async (h: TestHive, id: string) => (await (await h.api(`/v1/workers/${id}`)).json()) as any;
const phases = async (h: TestHive, ids: string[]) => Promise.all(ids.map(async (id) => (await record(h, id)).phase));

/** Lifecycle events of the hive (loading progress aside), as plain objects. */
function lifecycleEvents(h: TestHive) {
  const seen: any[] = [];
  h.bus.subscribe((e) => {
    if (e.type !== "loading_progress") seen.push({ type: e.type, ...e.data });
  });
  return seen;
}

describe("idle timeout", () => {
  test("an idle worker is stopped after timeout_s through the supervisor; its process is gone before it leaves the list; never restarted", async () => {
    const clock = new ManualClock();
    const h = await hive({ config: { idle: IDLE, restart: { enabled: true, base_backoff_s: 0, jitter: 0 } }, overrides: { clock } });
    const w = await idleWorker(h);
    const events = lifecycleEvents(h);
    const atRemoval: Array<{ alive: boolean; group: number[] }> = [];
    h.registry.onChange(({ kind, worker }) => {
      if (kind === "removed" && worker.id === w.id) atRemoval.push({ alive: pidAlive(w.pid), group: groupMembers(w.pid) });
    });

    clock.advance(9_000);
    expect(await phases(h, [w.id])).toEqual(["running"]);
    expect(events).toEqual([]);
    clock.advance(1_000); // the check at 10 s finds it idle for exactly 10 s
    expect(events).toEqual([{ type: "idle_stopped", worker_id: w.id, idle_s: 10, timeout_s: 10 }]);

    const gone = await h.waitState(w.id, (x) => x.phase === "exited", "gone");
    expect(gone.last_exit).toMatchObject({ reason: "idle", code: 0, signal: null, message: "idle for 10 s (idle timeout 10 s); stopped to free its memory" });
    expect(atRemoval).toEqual([{ alive: false, group: [] }]);
    expect(events.map((e) => e.type)).toEqual(["idle_stopped", "exited", "stopped"]);
    expect(events[1]).toMatchObject({ reason: "idle", code: 0, signal: null });
    expect(((await (await h.api("/v1/workers/list")).json()) as any).workers).toEqual([]);
    // The restart policy never brings it back, however long we wait.
    clock.advance(600_000);
    expect(events.map((e) => e.type)).toEqual(["idle_stopped", "exited", "stopped"]);
    expect(h.logs.some((l) => l.includes('"msg":"worker idle; stopping it"') && l.includes(w.id))).toBe(true);
  });

  test("never a worker with a request in flight, nor a loading one; reported activity resets the clock, health checks and heartbeats do not", async () => {
    const clock = new ManualClock();
    const h = await hive({
      config: {
        idle: IDLE,
        workers: { profiles: { "llm-worker-rbee": { slots: 4 }, "never-ready": { env: { FAKE_WORKER_NO_CALLBACK: "1" } } } },
      },
      workerEnv: { FAKE_WORKER_TOKEN_GATE: "1", FAKE_WORKER_TOKENS: "1", FAKE_WORKER_HEARTBEAT_MS: "20" },
      overrides: { clock },
    });
    const serving = await idleWorker(h);
    const reported = await idleWorker(h);
    const { worker_id: loading } = await h.spawn({ profile: "never-ready" });
    await h.waitState(loading, (w) => w.phase === "starting", "loading");
    const events = lifecycleEvents(h);

    // One request in flight: with four slots the worker stays `idle`, with in_flight 1.
    const res = await h.api(`/v1/workers/${serving.id}/inference`, { json: { job_id: "long" } });
    const reader = res.body!.getReader();
    await reader.read(); // "started"
    expect(await record(h, serving.id)).toMatchObject({ state: "idle", in_flight: 1, slots_available: 3 });

    // Heartbeats arrive and a health check round runs: neither moves last_activity.
    await h.waitState(reported.id, (w) => w.last_heartbeat !== null, "a heartbeat");
    await h.monitor.tick();
    expect((await record(h, reported.id)).last_activity).toEqual(reported.last_activity);

    clock.advance(6_000);
    const touched: any = await (await h.api(`/v1/workers/${reported.id}/activity`, { method: "POST" })).json();
    expect(touched.last_activity).toEqual({ secs_since_epoch: Math.floor(clock.now() / 1000), nanos_since_epoch: 0 });
    clock.advance(6_000); // 12 s since ready, 6 s since the report
    expect(events).toEqual([]);
    clock.advance(4_000); // 10 s since the report
    expect(events).toEqual([{ type: "idle_stopped", worker_id: reported.id, idle_s: 10, timeout_s: 10 }]);
    expect(await phases(h, [serving.id, loading])).toEqual(["running", "starting"]);

    // The request ends: from then on the serving worker counts as idle.
    await fetch(`${serving.url}/fake/open`, { method: "POST" });
    while (!(await reader.read()).done);
    await h.waitState(serving.id, (w) => w.in_flight === 0, "request done");
    clock.advance(9_000);
    expect(events.filter((e) => e.type === "idle_stopped").map((e) => e.worker_id)).toEqual([reported.id]);
    clock.advance(1_000);
    expect(events.filter((e) => e.type === "idle_stopped")).toEqual([
      { type: "idle_stopped", worker_id: reported.id, idle_s: 10, timeout_s: 10 },
      { type: "idle_stopped", worker_id: serving.id, idle_s: 10, timeout_s: 10 },
    ]);
    await h.waitState(serving.id, (w) => w.phase === "exited", "serving worker gone");
    // 26 s later the loading worker is still there: loading is not idleness.
    expect(await phases(h, [loading])).toEqual(["starting"]);
  });

  test("keep_alive_s per spawn overrides timeout_s; 0 is never; a value past a week is refused", async () => {
    const clock = new ManualClock();
    const h = await hive({ config: { idle: IDLE }, overrides: { clock } });
    const byDefault = await idleWorker(h);
    const longer = await idleWorker(h, { keep_alive_s: 30 });
    const never = await idleWorker(h, { keep_alive_s: 0 });
    expect([byDefault.keep_alive_s, longer.keep_alive_s, never.keep_alive_s]).toEqual([null, 30, 0]);
    clock.advance(10_000);
    await h.waitState(byDefault.id, (w) => w.phase === "exited", "default one gone");
    expect(await phases(h, [longer.id, never.id])).toEqual(["running", "running"]);
    clock.advance(20_000);
    const gone = await h.waitState(longer.id, (w) => w.phase === "exited", "longer one gone");
    expect(gone.last_exit.message).toBe("idle for 30 s (idle timeout 30 s); stopped to free its memory");
    clock.advance(7 * 24 * 3600 * 1000);
    expect(await phases(h, [never.id])).toEqual(["running"]);

    const refused = await h.api("/v1/workers/spawn", { json: { model_ref: h.modelRef, backend: "cpu", device: 0, keep_alive_s: 604_801 } });
    expect(refused.status).toBe(400);
    expect(await refused.json()).toEqual({ error: { code: "INVALID_INPUT", message: "keep_alive_s: Expected integer to be less or equal to 604800" } });
  });

  test("timeout_s = 0 never stops a worker, unless its spawn asked for a keep_alive_s", async () => {
    const clock = new ManualClock();
    const h = await hive({ config: { idle: { timeout_s: 0, check_interval_s: 1 } }, overrides: { clock } });
    const kept = await idleWorker(h);
    const short = await idleWorker(h, { keep_alive_s: 5 });
    clock.advance(5_000);
    const gone = await h.waitState(short.id, (w) => w.phase === "exited", "short one gone");
    expect(gone.last_exit.reason).toBe("idle");
    clock.advance(24 * 3600 * 1000);
    expect(await phases(h, [kept.id])).toEqual(["running"]);
  });
});
