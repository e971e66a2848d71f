/**
 * Surviving restarts (issue #12), with the daemon as a real process that is SIGKILLed:
 * - keep_workers_on_exit: the next hive adopts the workers (same ids, pids, ports, counters), their
 *   logs keep working, a worker that died meanwhile is reported exited, one that does not answer
 *   is stopped, a worker writing a lot of output survives the hive's death;
 * - the default policy: no worker and no grandchild outlives a SIGKILLed hive, also after 100 spawns;
 * - POST /v1/shutdown: 202, then the same shutdown as SIGTERM, exit 0.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { statSync } from "node:fs";
import { join } from "node:path";
import { prepareDataDir, startHiveProcess, type HiveProcess } from "./fixtures/hive-process.ts";
import { exitWithin, freePort, groupMembers, killGroup, pidAlive, tempDir, waitFor } from "./helpers.ts";

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

/** A data dir, a port, and a config; everything the hives and workers leave is removed afterwards. */
function setup(extraToml = "") {
  const dir = tempDir("rbee-survive-");
  const port = freePort();
  const base = 20000 + Math.floor(Math.random() * 40000);
  const { config, modelRef } = prepareDataDir(dir.path, [base, base + 200], extraToml);
  const groups = new Set<number>();
  const hives: HiveProcess[] = [];
  cleanups.push(() => {
    for (const h of hives) h.proc.kill("SIGKILL");
    for (const g of groups) killGroup(g);
    dir.cleanup();
  });
  return {
    dataDir: dir.path,
    modelRef,
    groups,
    async start(env: Record<string, string> = {}) {
      const h = await startHiveProcess({ dataDir: dir.path, port, config, env });
      hives.push(h);
      return h;
    },
    async spawn(h: HiveProcess, profile?: string) {
      const res = await h.api("/v1/workers/spawn", { json: { model_ref: modelRef, backend: "cpu", device: 0, profile } });
      if (res.status !== 200) throw new Error(`spawn: ${res.status} ${await res.text()}`);
      return ((await res.json()) as { worker_id: string }).worker_id;
    },
    async worker(h: HiveProcess, id: string, pred: (w: any) => boolean = (w) => w.state === "idle", what = "worker idle") {
      return waitFor(
        async () => {
          const res = await h.api(`/v1/workers/${id}`);
          const w: any = res.status === 200 ? await res.json() : undefined;
          if (w?.pid) groups.add(w.pid);
          return w && pred(w) ? w : undefined;
        },
        { what: `${what} (${id})`, timeoutMs: 10_000 },
      );
    },
    logFile: (id: string) => join(dir.path, "logs", `${id}.log`),
  };
}

const list = async (h: HiveProcess) => ((await (await h.api("/v1/workers/list")).json()) as { workers: any[] }).workers;
const kill9 = async (h: HiveProcess) => {
  h.proc.kill("SIGKILL");
  await h.exited;
};
const size = (path: string) => statSync(path).size;
const lastChatter = (lines: string[]) => Math.max(0, ...lines.map((l) => Number(/^chatter (\d+) /.exec(l)?.[1] ?? 0)));

/** Server-sent events of GET /v1/events from the first one, until `until` holds. */
async function events(h: HiveProcess, until: (evs: any[]) => boolean): Promise<any[]> {
  const res = await h.api("/v1/events?last_event_id=0");
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  const out: any[] = [];
  let buf = "";
  const deadline = performance.now() + 10_000; // hang guard
  while (!until(out) && performance.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let i: number;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const data = /^data: (.+)$/m.exec(buf.slice(0, i))?.[1];
      buf = buf.slice(i + 2);
      if (data) out.push(JSON.parse(data));
    }
  }
  await reader.cancel();
  return out;
}

describe("keep_workers_on_exit = true", () => {
  const keep = { RBEE_KEEP_WORKERS_ON_EXIT: "true" };

  test("SIGKILL of the hive with 3 running workers: the next hive adopts them, nothing restarts, logs keep going", async () => {
    const s = setup();
    // Workers talk all the time (both streams); a heartbeat only at their start.
    const env = { ...keep, FAKE_WORKER_CHATTER_MS: "20" };
    const h1 = await s.start(env);
    const ids = [await s.spawn(h1), await s.spawn(h1), await s.spawn(h1)];
    for (const id of ids) await s.worker(h1, id, (w) => w.state === "idle" && w.last_heartbeat !== null, "idle with its first heartbeat");
    const before = await list(h1);
    expect(before.map((w) => w.id)).toEqual(ids);
    const logsBefore = ((await (await h1.api(`/v1/workers/${ids[0]}/logs?tail=500`)).json()) as any).lines as string[];

    await kill9(h1);
    // Alive without their hive, still writing into their log files.
    for (const w of before) expect(pidAlive(w.pid)).toBe(true);
    const sizes = ids.map((id) => size(s.logFile(id)));
    await waitFor(() => ids.every((id, i) => size(s.logFile(id)) > sizes[i]! + 1000), { what: "logs growing without a hive" });

    const h2 = await s.start(env);
    const after = await list(h2);
    expect(after).toEqual(before); // same ids, pids, ports, urls, states, counters, timestamps
    for (const w of after) expect(pidAlive(w.pid)).toBe(true);
    const adoption = h2.logs().find((l) => l.msg === "workers of the previous hive");
    expect(adoption).toMatchObject({ keep_workers_on_exit: true, adopted: ids, restored: [], exited: [], stopped: [], pid_reused: [] });
    expect(h2.logs().find((l) => l.msg === "rbee-hive listening")).toMatchObject({ keep_workers_on_exit: true, workers_adopted: 3 });
    const seen = await events(h2, (evs) => evs.filter((e) => e.type === "adopted").length === 3);
    expect(seen.filter((e) => e.type === "adopted")).toEqual(
      before.map((w) => ({ type: "adopted", time: expect.any(Number), worker_id: w.id, pid: w.pid, port: w.port, url: w.url, state: "idle", phase: "running", restart_count: 0 })),
    );
    expect(seen.map((e) => e.type)).not.toContain("spawned");

    // Their logs: what they wrote before, and more as they go on.
    const logs = async () => ((await (await h2.api(`/v1/workers/${ids[0]}/logs?tail=500`)).json()) as any).lines as string[];
    const first = await logs();
    expect(first.length).toBeGreaterThan(0);
    expect(lastChatter(first)).toBeGreaterThan(lastChatter(logsBefore));
    await waitFor(async () => lastChatter(await logs()) > lastChatter(first), { what: "adopted worker's log growing" });
    // Each answers on its own URL and the hive still monitors it (a stop goes through the hive).
    for (const w of after) expect((await fetch(`${w.url.replace("localhost", "127.0.0.1")}/health`)).status).toBe(200);
    const stopped = (await (await h2.api(`/v1/workers/${ids[2]}`, { method: "DELETE" })).json()) as any;
    expect(stopped).toMatchObject({ id: ids[2], phase: "exited", last_exit: { reason: "stopped", message: "stopped on request", code: null, signal: null } });
    expect(pidAlive(before[2].pid)).toBe(false);
  });

  test("a worker that died meanwhile is reported exited; one that does not answer is stopped; neither is adopted", async () => {
    const s = setup("[monitor]\ntimeout_s = 0.3\n");
    const h1 = await s.start(keep);
    const [dead, frozen, fine] = [await s.spawn(h1), await s.spawn(h1), await s.spawn(h1)];
    const w = { dead: await s.worker(h1, dead), frozen: await s.worker(h1, frozen), fine: await s.worker(h1, fine) };
    await kill9(h1);
    process.kill(w.dead.pid, "SIGKILL"); // no hive sees it: it stays a zombie where PID 1 does not reap
    await waitFor(() => !pidAlive(w.dead.pid), { what: "worker dead" });
    process.kill(w.frozen.pid, "SIGSTOP"); // alive, same process, but it cannot answer

    const h2 = await s.start(keep);
    expect((await list(h2)).map((x) => x.id)).toEqual([fine]);
    const gone = (await (await h2.api(`/v1/workers/${dead}`)).json()) as any;
    expect(gone).toMatchObject({ id: dead, phase: "exited", pid: null });
    expect(gone.last_exit).toMatchObject({
      reason: "exited",
      code: null,
      signal: null,
      message: `worker (pid ${w.dead.pid}) exited while no hive was watching it; its exit status is unknown`,
    });
    expect(gone.last_exit.stderr_tail.at(-1)).toMatch(/HTTP server listening on 0\.0\.0\.0:\d+$/);
    const unanswered = (await (await h2.api(`/v1/workers/${frozen}`)).json()) as any;
    expect(unanswered.last_exit).toMatchObject({ reason: "unhealthy", code: null, signal: null });
    expect(unanswered.last_exit.message).toStartWith("left running by the previous hive but its health check failed (GET /health: ");
    await waitFor(() => !pidAlive(w.frozen.pid), { what: "unanswering worker stopped (group SIGTERM, grace, SIGKILL)" });
    expect(h2.logs().find((l) => l.msg === "workers of the previous hive")).toMatchObject({ adopted: [fine], exited: [dead], stopped: [frozen] });
    const seen = await events(h2, (evs) => evs.filter((e) => e.type === "exited").length === 2);
    expect(seen.filter((e) => e.type === "exited").map((e) => [e.worker_id, e.reason])).toEqual([[dead, "exited"], [frozen, "unhealthy"]]);
  });

  test("a worker that writes a lot of output survives the hive's death (its output is a file, not a pipe)", async () => {
    const s = setup();
    // A server dies of EPIPE/SIGPIPE on a pipe that lost its reader; this one says so by exiting.
    const env = { ...keep, FAKE_WORKER_CHATTER_MS: "1", FAKE_WORKER_DIE_ON_EPIPE: "1" };
    const h1 = await s.start(env);
    const id = await s.spawn(h1);
    const w = await s.worker(h1, id);
    await kill9(h1);
    const at = size(s.logFile(id));
    // Far more than a pipe buffer (64 KiB) written since the hive died.
    await waitFor(() => size(s.logFile(id)) > at + 256 * 1024, { what: "256 KiB more output", timeoutMs: 15_000 });
    expect(pidAlive(w.pid)).toBe(true);
    const h2 = await s.start(env);
    expect((await list(h2)).map((x) => [x.id, x.pid])).toEqual([[id, w.pid]]);
  });

  test("a graceful stop (SIGTERM) leaves the workers running and saved; the summary line says kept", async () => {
    const s = setup();
    const h1 = await s.start(keep);
    const id = await s.spawn(h1);
    const w = await s.worker(h1, id);
    h1.proc.kill("SIGTERM");
    expect(await exitWithin(h1.proc as any, 10_000, "hive after SIGTERM")).toBe(0);
    expect(pidAlive(w.pid)).toBe(true);
    expect(h1.logs().find((l) => l.msg === "shutdown complete")).toMatchObject({ reason: "SIGTERM", workers_total: 1, graceful: 0, forced: 0, kept: 1, timed_out: false });
    const h2 = await s.start(keep);
    expect(await list(h2)).toEqual([w]);
  });
});

describe("keep_workers_on_exit = false (default)", () => {
  test("after a SIGKILL of the hive no worker nor grandchild remains, also after the hive ran 100 spawns", async () => {
    // The 100 spawns are of a cheap worker (sleep, never ready): what counts is the spawning.
    const s = setup(`[workers.profiles.sleeper]\nbinary = "${Bun.which("sleep")}"\nargs = ["600"]\nreadiness = "http"\nbackends = ["cpu"]\n`);
    const h = await s.start({ FAKE_WORKER_GRANDCHILD: join(s.dataDir, "grandchild.pid") });
    // Three long-lived workers first, each with a grandchild in its group.
    const kept = [await s.spawn(h), await s.spawn(h), await s.spawn(h)];
    const workers: any[] = [];
    for (const id of kept) workers.push(await s.worker(h, id));
    await waitFor(() => workers.every((w) => groupMembers(w.pid).length === 2), { what: "each worker and its grandchild" });
    // 100 more spawns, twenty at a time, each stopped again: the spawning thread has done a lot of work.
    for (let batch = 0; batch < 5; batch++) {
      const ids = await Promise.all(Array.from({ length: 20 }, () => s.spawn(h, "sleeper")));
      for (const id of ids) await s.worker(h, id, (w) => w.phase === "starting", "sleeper started");
      const stops = await Promise.all(ids.map((id) => h.api(`/v1/workers/${id}`, { method: "DELETE" })));
      expect(stops.map((r) => r.status)).toEqual(ids.map(() => 200));
    }
    // The parent-death signal did not fire early: the first three and their grandchildren still run.
    const members = workers.flatMap((w) => groupMembers(w.pid));
    expect(members).toHaveLength(6);
    expect(members.every((pid) => pidAlive(pid))).toBe(true);
    expect((await list(h)).map((w) => w.id)).toEqual(kept);

    h.proc.kill("SIGKILL");
    const killedAt = performance.now();
    await waitFor(() => members.every((pid) => !pidAlive(pid)), { what: "every worker and grandchild gone", timeoutMs: 5000 });
    expect(performance.now() - killedAt).toBeLessThan(1000); // the bound: within 1 s
  });

  test("the next hive reports the workers of a SIGKILLed hive as exited (they died with it)", async () => {
    const s = setup();
    const h1 = await s.start();
    const id = await s.spawn(h1);
    const w = await s.worker(h1, id);
    await kill9(h1);
    await waitFor(() => !pidAlive(w.pid), { what: "worker died with its hive" });
    const h2 = await s.start();
    expect(await list(h2)).toEqual([]);
    const gone = (await (await h2.api(`/v1/workers/${id}`)).json()) as any;
    expect(gone.last_exit).toMatchObject({ reason: "exited", message: `worker (pid ${w.pid}) exited while no hive was watching it; its exit status is unknown` });
  });
});

describe("POST /v1/shutdown", () => {
  test("answers 202, then shuts down as on SIGTERM: workers stopped, one summary line, exit 0", async () => {
    const s = setup();
    const h = await s.start();
    const id = await s.spawn(h);
    const w = await s.worker(h, id);
    const res = await h.api("/v1/shutdown", { method: "POST" });
    expect(res.status).toBe(202);
    expect(await res.json()).toEqual({ message: "shutting down" });
    expect(await exitWithin(h.proc as any, 10_000, "hive after POST /v1/shutdown")).toBe(0);
    expect(pidAlive(w.pid)).toBe(false);
    const summary = h.logs().filter((l) => l.msg === "shutdown complete");
    expect(summary).toHaveLength(1);
    expect(summary[0]).toMatchObject({ reason: "POST /v1/shutdown", workers_total: 1, graceful: 1, forced: 0, kept: 0, timed_out: false, ms: expect.any(Number) });
  });
});
