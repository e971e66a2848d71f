/**
 * Start-up decisions on a previous hive's saved workers (workers/adoption.ts), with real processes
 * standing in for the workers and the state file written the way a hive writes it.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { openHiveState } from "../src/hive-state.ts";
import { systemClock } from "../src/shared/clock.ts";
import { readProcStat } from "../src/shared/proc-stat.ts";
import { newWorkerRecord } from "../src/workers/registry.ts";
import type { WorkerInfo } from "../src/workers/schemas.ts";
import type { LoadedConfig } from "../src/config.ts";
import { groupMembers, killGroup, memoryLogger, pidAlive, startTestHive, waitFor, type TestHive } from "./helpers.ts";

const hives: TestHive[] = [];
const procs: Array<{ pid: number; kill(sig?: number | NodeJS.Signals): void }> = [];
afterEach(async () => {
  await Promise.all(hives.splice(0).map((h) => h.close()));
  for (const p of procs.splice(0)) killGroup(p.pid);
});

function record(id: string, patch: Partial<WorkerInfo> = {}): WorkerInfo {
  const r = newWorkerRecord({ id, url: "http://127.0.0.1:1", model_ref: "file:/m/x.gguf", backend: "cpu", device: 0, port: 1, profile: "llm-worker-rbee", phase: "running", now: Date.now() });
  return { ...r, state: "idle", ...patch };
}

/** Leave one saved worker in the data dir, as a hive that just died would. */
const saved = (rec: WorkerInfo, proc: { pid: number; pgid: number; startTime: string | null } | null) => (loaded: LoadedConfig) => {
  const state = openHiveState(loaded, memoryLogger(), systemClock);
  state.workers.save(rec, proc);
  state.db.close();
};

async function hive(beforeStart: (loaded: LoadedConfig) => void, keep: boolean, token?: string) {
  const h = await startTestHive({ config: { workers: { keep_workers_on_exit: keep } }, beforeStart, token });
  hives.push(h);
  return h;
}

/** A process in its own group, standing in for a worker. */
function standIn(argv: string[], stdin: "ignore" | "pipe" = "ignore") {
  const p = Bun.spawn(argv, { detached: true, stdin, stdout: "ignore", stderr: "ignore" });
  procs.push(p);
  return p;
}

const gone = async (h: TestHive, id: string) => (await (await h.api(`/v1/workers/${id}`)).json()) as any;
const listed = async (h: TestHive) => ((await (await h.api("/v1/workers/list")).json()) as any).workers.map((w: any) => w.id);

describe("a previous hive's workers", () => {
  test("a saved pid now used by an unrelated process is never touched; the worker is reported exited", async () => {
    const stranger = standIn(["sleep", "60"]);
    const rec = record("worker-pid-reused", { pid: stranger.pid });
    for (const keep of [true, false]) {
      const h = await hive(saved(rec, { pid: stranger.pid, pgid: stranger.pid, startTime: "1" }), keep);
      expect(await listed(h)).toEqual([]);
      expect((await gone(h, rec.id)).last_exit).toMatchObject({
        reason: "exited",
        code: null,
        signal: null,
        message: `worker is gone: its pid ${stranger.pid} belongs to another process now, which was left alone`,
      });
      expect(h.logs.map((l) => JSON.parse(l)).find((l) => l.msg === "workers of the previous hive")).toMatchObject({ exited: [rec.id], pid_reused: [rec.id] });
    }
    expect(pidAlive(stranger.pid)).toBe(true); // no SIGTERM, no SIGKILL: sleep would have died of either
    expect(readProcStat(stranger.pid)?.state).not.toBe("T");
  });

  test("default policy: a saved worker still running is stopped at start-up, its whole group, and reported", async () => {
    // The leader (exec'd into sleep) and a grandchild in its group.
    const leader = standIn(["sh", "-c", "sleep 61 & exec sleep 60"]);
    await waitFor(() => readProcStat(leader.pid)?.startTime && true, { what: "stand-in started" });
    const rec = record("worker-left-running", { pid: leader.pid });
    const startTime = readProcStat(leader.pid)!.startTime;
    const h = await hive(saved(rec, { pid: leader.pid, pgid: leader.pid, startTime }), false);
    expect(await listed(h)).toEqual([]);
    expect((await gone(h, rec.id)).last_exit).toMatchObject({
      reason: "stopped",
      message: "stopped at start-up: a previous hive left it running, and workers live and die with the hive (keep_workers_on_exit = false)",
    });
    expect(await leader.exited).toBe(143); // SIGTERM (the group got it)
    await waitFor(() => groupMembers(leader.pid).length === 0, { what: "grandchild gone too" });
  });

  test("a saved worker that died: what it left in its process group is killed", async () => {
    // The leader waits for a line on stdin, then exits; its grandchild stays in the group.
    const leader = standIn(["sh", "-c", "sleep 62 & read line"], "pipe");
    await waitFor(() => groupMembers(leader.pid).length === 2, { what: "leader and grandchild" });
    const startTime = readProcStat(leader.pid)!.startTime;
    const grandchild = groupMembers(leader.pid).find((pid) => pid !== leader.pid)!;
    (leader.stdin as unknown as { write(s: string): void; end(): void }).write("go\n");
    (leader.stdin as unknown as { end(): void }).end();
    await leader.exited;
    expect(pidAlive(grandchild)).toBe(true);
    const rec = record("worker-died", { pid: leader.pid });
    const h = await hive(saved(rec, { pid: leader.pid, pgid: leader.pid, startTime }), true);
    expect((await gone(h, rec.id)).last_exit).toMatchObject({ reason: "exited" });
    await waitFor(() => !pidAlive(grandchild), { what: "left-over grandchild killed" });
  });

  test("a worker parked in crash_loop is listed again, still parked", async () => {
    const rec = record("worker-parked", { state: "loading", phase: "crash_loop", crash_loop_reason: "circuit breaker open", pid: null, model_path: "/m/x.gguf" });
    const h = await hive(saved(rec, null), false);
    expect(await listed(h)).toEqual([rec.id]);
    expect(await gone(h, rec.id)).toEqual(rec);
  });
});

describe("POST /v1/shutdown", () => {
  test("needs the Bearer token; with it answers 202 and shuts the hive down", async () => {
    const token = "s3cret-token-0123456789";
    const h = await hive(() => {}, false, token);
    const without = await h.api("/v1/shutdown", { method: "POST", auth: false });
    expect(without.status).toBe(401);
    expect(await without.json()).toEqual({ error: { code: "MISSING_API_KEY", message: "Missing API key" } });
    const wrong = await h.api("/v1/shutdown", { method: "POST", auth: false, headers: { authorization: "Bearer wrong-token-0123456789" } });
    expect(wrong.status).toBe(401);
    expect(h.shutdown.started).toBe(false);
    const res = await h.api("/v1/shutdown", { method: "POST" });
    expect(res.status).toBe(202);
    expect(await res.json()).toEqual({ message: "shutting down" });
    await waitFor(() => h.logs.some((l) => JSON.parse(l).msg === "shutdown complete"), { what: "shutdown complete" });
    expect(h.logs.map((l) => JSON.parse(l)).find((l) => l.msg === "shutdown complete")).toMatchObject({
      reason: "POST /v1/shutdown",
      workers_total: 0,
      graceful: 0,
      forced: 0,
      kept: 0,
      timed_out: false,
    });
  });
});
