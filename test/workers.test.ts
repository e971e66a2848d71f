/** Worker lifecycle over real HTTP with real fake-worker processes started through Bun.spawn. */
import { afterEach, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync, chmodSync } from "node:fs";
import { join } from "node:path";
import { FAKE_WORKER, pidAlive, startTestHive, waitFor, type TestHive } from "./helpers.ts";

const TOKEN = "test-token-0123456789abcdef";
const hives: TestHive[] = [];
afterEach(async () => {
  await Promise.all(hives.splice(0).map((h) => h.close()));
});

async function hive(opts: Parameters<typeof startTestHive>[0] = {}) {
  const h = await startTestHive(opts);
  hives.push(h);
  return h;
}

const isIdle = (w: any) => w.state === "idle";
const isSystemTime = (v: any) =>
  typeof v === "object" && Number.isInteger(v.secs_since_epoch) && Number.isInteger(v.nanos_since_epoch);

describe("spawn → ready → list", () => {
  test("answers at once with loading, becomes idle, list has the upstream WorkerInfo shape", async () => {
    const h = await hive({ workerEnv: { FAKE_WORKER_LOAD_MS: "400" } });
    const started = performance.now();
    const spawned = await h.spawn();
    expect(performance.now() - started).toBeLessThan(350); // did not wait for the 400 ms load
    expect(spawned.worker_id).toMatch(/^worker-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(spawned.state).toBe("loading");
    expect(spawned.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);

    const loading: any = await (await h.api(`/v1/workers/${spawned.worker_id}`)).json();
    expect(loading.state).toBe("loading");
    expect(["starting", "spawning", "confirming"]).toContain(loading.phase);

    await h.waitState(spawned.worker_id, isIdle, "idle");
    const { workers }: any = await (await h.api("/v1/workers/list")).json();
    expect(workers).toHaveLength(1);
    const w = workers[0];
    // Upstream fields, names and types (protocol §1).
    expect(w).toMatchObject({
      id: spawned.worker_id,
      url: spawned.url,
      model_ref: h.modelRef,
      backend: "cpu",
      device: 0,
      state: "idle",
      slots_total: 1,
      slots_available: 1,
      failed_health_checks: 0,
      restart_count: 0,
      last_restart: null,
    });
    expect(Number.isInteger(w.pid)).toBe(true);
    expect(isSystemTime(w.last_activity)).toBe(true);
    expect(w.last_heartbeat === null || isSystemTime(w.last_heartbeat)).toBe(true);
    // Hive additions.
    expect(w.phase).toBe("running");
    expect(isSystemTime(w.ready_at)).toBe(true);
    expect(w.profile).toBe("llm-worker-rbee");
    // The worker really serves /health on that URL.
    expect(await (await fetch(`${w.url}/health`)).json()).toEqual({ status: "healthy", vram_bytes: 0 });
  });

  test("readiness waits for /health even when the callback comes before the worker listens", async () => {
    const h = await hive({ workerEnv: { FAKE_WORKER_SERVE_DELAY_MS: "300" } });
    const { worker_id } = await h.spawn();
    const confirming = await h.waitState(worker_id, (w) => w.phase === "confirming", "confirming");
    expect(confirming.state).toBe("loading"); // callback alone is not enough
    const idle = await h.waitState(worker_id, isIdle, "idle");
    expect(idle.phase).toBe("running");
  });
});

describe("worker callbacks without Bearer", () => {
  test("ready is accepted without a token only for a spawned, loading worker", async () => {
    const h = await hive({ token: TOKEN, workerEnv: { FAKE_WORKER_NO_CALLBACK: "1" } });
    const { worker_id } = await h.spawn();
    await h.waitState(worker_id, (w) => w.phase === "starting", "starting");

    const stranger = await h.api("/v1/workers/ready", { json: { worker_id: "worker-nobody", url: "http://localhost:1" }, auth: false });
    expect(stranger.status).toBe(404);
    expect(((await stranger.json()) as any).error.code).toBe("WORKER_NOT_FOUND");

    const noId = await h.api("/v1/workers/ready", { json: { url: "x" }, auth: false });
    expect(noId.status).toBe(400);

    const ok = await h.api("/v1/workers/ready", { json: { worker_id, url: "http://localhost:1" }, auth: false });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ message: "Worker registered as ready" });

    // Other protected routes still need the token.
    expect((await h.api("/v1/workers/list", { auth: false })).status).toBe(401);
  });

  test("the real worker's unauthenticated callback succeeds with a token set (upstream bug absorbed)", async () => {
    const h = await hive({ token: TOKEN });
    const { worker_id } = await h.spawn();
    await h.waitState(worker_id, isIdle, "idle");
    // Not loading any more: a second unauthenticated ready is refused, an authenticated one is fine.
    expect((await h.api("/v1/workers/ready", { json: { worker_id }, auth: false })).status).toBe(401);
    expect((await h.api("/v1/workers/ready", { json: { worker_id } })).status).toBe(200);
  });

  test("heartbeats arrive through /v1/heartbeat and the upstream alias path", async () => {
    const h = await hive({ token: TOKEN, workerEnv: { FAKE_WORKER_HEARTBEAT_MS: "100000" } });
    const { worker_id } = await h.spawn();
    const idle = await h.waitState(worker_id, isIdle, "idle");
    // The fake worker sent its first heartbeat to the alias path at once.
    expect(isSystemTime(idle.last_heartbeat)).toBe(true);
    expect(idle.health_status).toBe("healthy");

    for (const path of ["/v1/heartbeat", "/v1/workers/ready/v1/heartbeat"]) {
      const before = (await (await h.api(`/v1/workers/${worker_id}`)).json()) as any;
      await Bun.sleep(5);
      const res = await h.api(path, {
        json: { worker_id, timestamp: new Date().toISOString(), health_status: "degraded" },
        auth: false,
      });
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ message: "Heartbeat received" });
      const after = (await (await h.api(`/v1/workers/${worker_id}`)).json()) as any;
      expect(after.health_status).toBe("degraded");
      const t = (x: any) => x.last_heartbeat.secs_since_epoch * 1e9 + x.last_heartbeat.nanos_since_epoch;
      expect(t(after)).toBeGreaterThan(t(before));
    }
    const unknown = await h.api("/v1/heartbeat", { json: { worker_id: "worker-unknown", health_status: "healthy" }, auth: false });
    expect(unknown.status).toBe(404);
    // The heartbeat did not count as activity (the idle timeout depends on that).
    const w = (await (await h.api(`/v1/workers/${worker_id}`)).json()) as any;
    expect(w.last_activity.secs_since_epoch).toBeLessThanOrEqual(w.ready_at.secs_since_epoch);
  });
});

describe("stop", () => {
  test("a worker that ignores SIGTERM is killed after the grace, its grandchild too", async () => {
    const pidFile = join(require("node:os").tmpdir(), `grandchild-${crypto.randomUUID()}.pid`);
    const h = await hive({
      config: { workers: { stop_grace_s: 0.3 } },
      workerEnv: { FAKE_WORKER_IGNORE_SIGTERM: "1", FAKE_WORKER_GRANDCHILD: pidFile },
    });
    const { worker_id } = await h.spawn();
    const idle = await h.waitState(worker_id, isIdle, "idle");
    const grandchild = Number(readFileSync(pidFile, "utf8"));
    expect(pidAlive(idle.pid)).toBe(true);
    expect(pidAlive(grandchild)).toBe(true);

    const started = performance.now();
    const res = await h.api(`/v1/workers/${worker_id}`, { method: "DELETE" });
    const took = performance.now() - started;
    expect(res.status).toBe(200);
    const final: any = await res.json();
    expect(took).toBeGreaterThanOrEqual(280);
    expect(took).toBeLessThan(2000);
    expect(final.last_exit).toMatchObject({ reason: "stopped", signal: "SIGKILL" });
    expect(final.phase).toBe("exited");
    expect(pidAlive(idle.pid)).toBe(false);
    await waitFor(() => !pidAlive(grandchild), { what: "grandchild gone", timeoutMs: 1000 });

    const { workers }: any = await (await h.api("/v1/workers/list")).json();
    expect(workers).toHaveLength(0);
    // Stopping again is not an error; an unknown id is.
    expect((await h.api("/v1/workers/stop", { json: { worker_id } })).status).toBe(200);
    expect((await h.api("/v1/workers/stop", { json: { worker_id: "worker-nope" } })).status).toBe(404);
  });

  test("POST /v1/workers/stop answers when the process is gone", async () => {
    const h = await hive();
    const { worker_id } = await h.spawn();
    const idle = await h.waitState(worker_id, isIdle, "idle");
    const res = await h.api("/v1/workers/stop", { json: { worker_id } });
    expect(res.status).toBe(200);
    const body: any = await res.json();
    expect(body.message).toBe("Worker stopped");
    expect(body.worker.last_exit).toMatchObject({ reason: "stopped", code: 0, signal: null });
    expect(pidAlive(idle.pid)).toBe(false);
  });
});

describe("crashes", () => {
  test("a crash is seen at once, with exit code and stderr tail; the worker leaves the list", async () => {
    const h = await hive({ workerEnv: { FAKE_WORKER_CRASH_AFTER_MS: "100" } });
    const events: any[] = [];
    h.bus.subscribe((e) => events.push(e));
    const { worker_id } = await h.spawn();
    await h.waitState(worker_id, isIdle, "idle");
    const gone = await h.waitState(worker_id, (w) => w.phase === "exited", "exited", 3000);
    expect(gone.last_exit.reason).toBe("crashed");
    expect(gone.last_exit.code).toBe(1);
    expect(gone.last_exit.stderr_tail.join("\n")).toMatch(/panicked|error|fatal/i);
    const { workers }: any = await (await h.api("/v1/workers/list")).json();
    expect(workers).toHaveLength(0);
    const exited = events.find((e) => e.type === "exited");
    expect(exited.data).toMatchObject({ worker_id, reason: "crashed", code: 1 });

    const logs: any = await (await h.api(`/v1/workers/${worker_id}/logs?tail=5`)).json();
    expect(logs.lines.length).toBeGreaterThan(0);
    expect(logs.lines.length).toBeLessThanOrEqual(5);
  });

  test("an external SIGKILL is classified as killed, within milliseconds", async () => {
    const h = await hive();
    const { worker_id } = await h.spawn();
    const idle = await h.waitState(worker_id, isIdle, "idle");
    const exited = new Promise<number>((resolve) => h.bus.subscribe((e) => e.type === "exited" && resolve(performance.now())));
    const killedAt = performance.now();
    process.kill(idle.pid, "SIGKILL");
    expect((await exited) - killedAt).toBeLessThan(250);
    const gone = await h.waitState(worker_id, (w) => w.phase === "exited", "exited");
    expect(gone.last_exit).toMatchObject({ reason: "killed", signal: "SIGKILL", code: null });
  });

  test("a worker that fails while loading is load_failed with its stderr", async () => {
    const h = await hive({ workerEnv: { FAKE_WORKER_FAIL_LOAD: "1" } });
    const { worker_id } = await h.spawn();
    const gone = await h.waitState(worker_id, (w) => w.phase === "exited", "exited");
    expect(gone.last_exit.reason).toBe("load_failed");
    expect(gone.last_exit.code).toBe(3);
    expect(gone.last_exit.stderr_tail.join("\n")).toContain("failed to load model");
  });
});

describe("ports", () => {
  test("20 concurrent spawns get 20 distinct ports that all serve", async () => {
    const h = await hive();
    const spawned = await Promise.all(Array.from({ length: 20 }, () => h.spawn()));
    const ports = spawned.map((s) => Number(new URL(s.url).port));
    expect(new Set(ports).size).toBe(20);
    await Promise.all(spawned.map((s) => h.waitState(s.worker_id, isIdle, "idle", 15000)));
    const answers = await Promise.all(spawned.map(async (s) => (await fetch(`${s.url}/health`)).status));
    expect(answers.every((s) => s === 200)).toBe(true);
  }, 30000);

  test("ports come back after stops and crashes (a one-port range serves spawn after spawn)", async () => {
    const port = 20000 + Math.floor(Math.random() * 20000);
    const h = await hive({ config: { workers: { port_min: port, port_max: port } } });
    const first = await h.spawn();
    expect(first.url).toEndWith(`:${port}`);
    const idle = await h.waitState(first.worker_id, isIdle, "idle");
    const full = await h.api("/v1/workers/spawn", { json: { model_ref: h.modelRef, backend: "cpu", device: 0 } });
    expect(full.status).toBe(503);
    expect(((await full.json()) as any).error.code).toBe("NO_FREE_PORT");
    process.kill(idle.pid, "SIGKILL");
    await h.waitState(first.worker_id, (w) => w.phase === "exited", "exited");
    const second = await h.spawn();
    expect(second.url).toEndWith(`:${port}`);
    await h.waitState(second.worker_id, isIdle, "idle");
    await h.api(`/v1/workers/${second.worker_id}`, { method: "DELETE" });
    const third = await h.spawn();
    await h.waitState(third.worker_id, isIdle, "idle");
  });

  test("a port taken by a foreign process is skipped", async () => {
    const h0 = await hive();
    await h0.close();
    hives.pop();
    const port = 20000 + Math.floor(Math.random() * 20000);
    const foreign = Bun.listen({ hostname: "127.0.0.1", port, socket: { data() {} } });
    try {
      const h = await hive({ config: { workers: { port_min: port, port_max: port + 5 } } });
      const { worker_id, url } = await h.spawn();
      expect(Number(new URL(url).port)).not.toBe(port);
      await h.waitState(worker_id, isIdle, "idle");
    } finally {
      foreign.stop(true);
    }
  });
});

describe("clear errors", () => {
  test("missing binary, bad model_ref, bad backend, unknown model, unknown worker", async () => {
    const h = await hive({ config: { workers: { binary: "/nonexistent/llm-worker-rbee" } } });
    const spawn = (body: Record<string, unknown>) =>
      h.api("/v1/workers/spawn", { json: { model_ref: h.modelRef, backend: "cpu", device: 0, ...body } });
    const expectError = async (res: Response, status: number, code: string, text?: string) => {
      expect(res.status).toBe(status);
      const body: any = await res.json();
      expect(body.error.code).toBe(code);
      if (text) expect(body.error.message).toContain(text);
    };
    await expectError(await spawn({}), 500, "WORKER_BINARY_NOT_FOUND", "/nonexistent/llm-worker-rbee");
    await expectError(await spawn({ model_ref: "hf:org/repo;reboot" }), 400, "INVALID_INPUT", "';'");
    await expectError(await spawn({ model_ref: "file:/etc/passwd" }), 400, "INVALID_INPUT", "outside the allowed model roots");
    await expectError(await spawn({ backend: "cuda;rm" }), 400, "INVALID_INPUT", "backend");
    await expectError(await spawn({ backend: "tpu" }), 400, "UNSUPPORTED_BACKEND", "cpu, cuda, metal");
    await expectError(await spawn({ device: -1 }), 400, "INVALID_INPUT");
    await expectError(await spawn({ profile: "ghost" }), 400, "UNKNOWN_PROFILE");
    await expectError(await h.api("/v1/workers/worker-unknown"), 404, "WORKER_NOT_FOUND");
    await expectError(await h.api("/v1/workers/worker-unknown", { method: "DELETE" }), 404, "WORKER_NOT_FOUND");
    await expectError(await h.api("/v1/workers/worker-unknown/logs"), 404, "WORKER_NOT_FOUND");
    // Nothing was registered by the failed spawns, and the daemon still answers.
    expect(((await (await h.api("/v1/workers/list")).json()) as any).workers).toHaveLength(0);
    expect((await h.api("/v1/health")).status).toBe(200);
  });

  test("a model that is not on disk and an hf model not in the catalog", async () => {
    const h = await hive();
    const res = await h.api("/v1/workers/spawn", {
      json: { model_ref: `file:${h.modelsDir}/missing.gguf`, backend: "cpu", device: 0 },
    });
    expect(res.status).toBe(404);
    expect(((await res.json()) as any).error.code).toBe("MODEL_NOT_FOUND");
  });
});

describe("loading timeout", () => {
  test("a silent worker that never calls back is stopped at the stall timeout", async () => {
    const h = await hive({
      config: { workers: { loading_stall_timeout_s: 0.3, loading_max_s: 10, stop_grace_s: 0.2 } },
      workerEnv: { FAKE_WORKER_NO_CALLBACK: "1" },
    });
    const { worker_id } = await h.spawn();
    const gone = await h.waitState(worker_id, (w) => w.phase === "exited", "exited", 3000);
    expect(gone.last_exit.reason).toBe("load_timeout");
    expect(gone.last_exit.message).toContain("stall");
  });

  test("output while loading extends the deadline; the worker becomes ready", async () => {
    const h = await hive({
      config: { workers: { loading_stall_timeout_s: 0.25, loading_max_s: 10 } },
      workerEnv: { FAKE_WORKER_LOAD_MS: "800", FAKE_WORKER_LOAD_OUTPUT_MS: "50" },
    });
    const { worker_id } = await h.spawn();
    const idle = await h.waitState(worker_id, isIdle, "idle", 3000);
    expect(idle.last_exit).toBeNull();
  });

  test("the hard cap stops a worker that keeps printing but never gets ready", async () => {
    const h = await hive({
      config: { workers: { loading_stall_timeout_s: 0.25, loading_max_s: 0.6, stop_grace_s: 0.2 } },
      workerEnv: { FAKE_WORKER_LOAD_MS: "5000", FAKE_WORKER_LOAD_OUTPUT_MS: "50" },
    });
    const { worker_id } = await h.spawn();
    const gone = await h.waitState(worker_id, (w) => w.phase === "exited", "exited", 3000);
    expect(gone.last_exit.reason).toBe("load_timeout");
    expect(gone.last_exit.message).toContain("loading_max_s");
  });
});

describe("events", () => {
  async function readEvents(res: Response, until: (events: any[]) => boolean, timeoutMs = 3000) {
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    const events: any[] = [];
    const deadline = Date.now() + timeoutMs;
    while (!until(events) && Date.now() < deadline) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value);
      let idx;
      while ((idx = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, idx);
        buf = buf.slice(idx + 2);
        const id = /^id: (\d+)$/m.exec(block)?.[1];
        const event = /^event: (.+)$/m.exec(block)?.[1];
        const data = /^data: (.+)$/m.exec(block)?.[1];
        if (id && event && data) events.push({ id: Number(id), event, data: JSON.parse(data) });
      }
    }
    await reader.cancel();
    return events;
  }

  test("lifecycle events carry ids and replay after Last-Event-ID", async () => {
    const h = await hive();
    const live = await h.api("/v1/events");
    expect(live.headers.get("content-type")).toContain("text/event-stream");
    const { worker_id } = await h.spawn();
    await h.waitState(worker_id, isIdle, "idle");
    await h.api(`/v1/workers/${worker_id}`, { method: "DELETE" });
    const seen = await readEvents(live, (ev) => ev.some((e) => e.event === "stopped"));
    const types = seen.map((e) => e.event);
    expect(types).toEqual(expect.arrayContaining(["spawned", "callback", "ready", "exited", "stopped"]));
    expect(types.indexOf("spawned")).toBeLessThan(types.indexOf("ready"));
    const ids = seen.map((e) => e.id);
    expect([...ids].sort((a, b) => a - b)).toEqual(ids);
    expect(seen.every((e) => e.data.worker_id === worker_id)).toBe(true);

    const readyId = seen.find((e) => e.event === "ready").id;
    const replay = await h.api("/v1/events", { headers: { "Last-Event-ID": String(readyId) } });
    const replayed = await readEvents(replay, (ev) => ev.some((e) => e.event === "stopped"));
    expect(replayed[0].id).toBe(readyId + 1);
    expect(replayed.map((e) => e.event)).toEqual(types.slice(types.indexOf("ready") + 1));
  });

  test("replay from before the buffer starts with a replay_gap event", async () => {
    const h = await hive({ config: { server: { events_buffer: 3 } } });
    for (let i = 0; i < 5; i++) h.bus.publish("probe", { n: i });
    const res = await h.api("/v1/events", { headers: { "Last-Event-ID": "0" } });
    const reader = res.body!.getReader();
    let text = "";
    while (!text.includes("id: 5")) text += new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    expect(text).toContain('event: replay_gap\ndata: {"type":"replay_gap","requested_after":0,"oldest_id":3}');
    expect(text.indexOf("replay_gap")).toBeLessThan(text.indexOf("id: 3"));
    expect(text).not.toContain("id: 2\n");
  });

  test("a client that disconnects is unsubscribed at once", async () => {
    const h = await hive();
    const before = h.bus.subscriberCount; // in-process subscribers (metrics)
    const ac = new AbortController();
    const res = await h.api("/v1/events", { signal: ac.signal });
    expect(res.status).toBe(200);
    await waitFor(() => h.bus.subscriberCount === before + 1, { what: "subscribed" });
    ac.abort();
    await waitFor(() => h.bus.subscriberCount === before, { what: "unsubscribed", timeoutMs: 1000 });
  });
});

describe("worker host", () => {
  test("RBEE_WORKER_HOST only changes the advertised URL; the hive checks workers on loopback", async () => {
    const h = await hive({ env: { RBEE_WORKER_HOST: "10.255.255.1" } });
    const { worker_id, url } = await h.spawn();
    expect(url).toMatch(/^http:\/\/10\.255\.255\.1:\d+$/);
    const idle = await h.waitState(worker_id, isIdle, "idle");
    expect(idle.url).toBe(url);
  });
});

describe("worker logs", () => {
  test("every line lands in <data_dir>/logs/<id>.log; a log over the cap is rotated at the next start", async () => {
    const h = await hive({ config: { workers: { log_file_max_mb: 0.0002 } } });
    const { worker_id } = await h.spawn();
    await h.waitState(worker_id, isIdle, "idle");
    const logFile = join(h.dataDir, "logs", `${worker_id}.log`);
    const first = readFileSync(logFile, "utf8");
    expect(first).toContain("Calling back to pool manager");
    expect(first.length).toBeGreaterThan(210);
    const res = await h.api(`/v1/workers/${worker_id}/restart`, { method: "POST" });
    expect(res.status).toBe(200);
    await h.waitState(worker_id, (w) => w.restart_count === 1 && w.state === "idle", "restarted");
    expect(readFileSync(`${logFile}.1`, "utf8")).toStartWith(first);
    expect(readFileSync(logFile, "utf8")).toContain("Calling back to pool manager");
  });
});

describe("worker profiles", () => {
  test("an http-readiness profile (llama-server style) becomes ready by polling /health", async () => {
    const wrapper = join(require("node:os").tmpdir(), `llama-server-${crypto.randomUUID()}`);
    writeFileSync(wrapper, readFileSync(FAKE_WORKER));
    chmodSync(wrapper, 0o755);
    const h = await hive({
      config: {
        workers: {
          profiles: {
            llama: {
              binary: wrapper,
              args: ["--model", "{model_path}", "--port", "{port}", "--host", "127.0.0.1"],
              readiness: "http",
              readiness_path: "/health",
              health_path: "/health",
              healthy_status: ["ok"],
              backends: ["cpu", "cuda"],
            },
          },
        },
      },
      workerEnv: { FAKE_WORKER_MODE: "llama-server", FAKE_WORKER_LOAD_MS: "200" },
    });
    const { worker_id } = await h.spawn({ profile: "llama" });
    const early: any = await (await h.api(`/v1/workers/${worker_id}`)).json();
    expect(early.state).toBe("loading");
    const idle = await h.waitState(worker_id, isIdle, "idle");
    expect(idle.profile).toBe("llama");
    expect(await (await fetch(`${idle.url}/health`)).json()).toEqual({ status: "ok" });
  });
});
