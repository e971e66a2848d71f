/** Worker lifecycle over real HTTP with real fake-worker processes started through Bun.spawn. */
import { afterEach, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync, chmodSync } from "node:fs";
import { join } from "node:path";
import { FAKE_WORKER, killGroup, pidAlive, startTestHive, tempDir, waitFor, type TestHive } from "./helpers.ts";
import { FakeHub } from "./fixtures/fake-hub.ts";

const TOKEN = "test-token-0123456789abcdef";
const hives: TestHive[] = [];
const cleanups: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  await Promise.all(hives.splice(0).map((h) => h.close()));
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A temp dir removed after the test, for files a worker must find before the hive exists. */
function scratchDir(): string {
  const d = tempDir("rbee-workers-");
  cleanups.push(d.cleanup);
  return d.path;
}

async function hive(opts: Parameters<typeof startTestHive>[0] = {}) {
  const h = await startTestHive(opts);
  hives.push(h);
  return h;
}

const isIdle = (w: any) => w.state === "idle";
const isSystemTime = (v: any) =>
  typeof v === "object" && Number.isInteger(v.secs_since_epoch) && Number.isInteger(v.nanos_since_epoch);

describe("spawn → ready → list", () => {
  test("answers at once, while the worker is still loading", async () => {
    // This worker never calls back: a spawn that waited for readiness would never answer.
    const h = await hive({ workerEnv: { FAKE_WORKER_NO_CALLBACK: "1" } });
    const spawned = await h.spawn();
    expect(spawned.worker_id).toMatch(/^worker-[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const port = Number(new URL(spawned.url).port);
    expect(spawned).toEqual({ worker_id: spawned.worker_id, url: `http://127.0.0.1:${port}`, state: "loading" });
    const loading: any = await (await h.api(`/v1/workers/${spawned.worker_id}`)).json();
    expect(loading).toMatchObject({ state: "loading", phase: "starting", ready_at: null, slots_available: 0 });
  });

  test("a device index sent as a decimal string is taken as the number", async () => {
    const h = await hive({ workerEnv: { FAKE_WORKER_NO_CALLBACK: "1" } });
    // cpu has device 0 only (the preflight refuses others); toBe tells the number 0 from "0".
    const res = await h.api("/v1/workers/spawn", { json: { model_ref: h.modelRef, backend: "cpu", device: "0" } });
    expect(res.status).toBe(200);
    const { worker_id }: any = await res.json();
    expect(((await (await h.api(`/v1/workers/${worker_id}`)).json()) as any).device).toBe(0);
  });

  test("becomes idle; list has the upstream WorkerInfo shape plus the hive's fields", async () => {
    // No detection after the spawn's own: memory_used_bytes stays unknown (test/spawn-admission.test.ts fills it).
    const h = await hive({ config: { resources: { cache_ttl_s: 3600 } } });
    const spawned = await h.spawn();
    // The first heartbeat goes out right after the callback; wait for it so every field is known.
    await h.waitState(spawned.worker_id, (w) => isIdle(w) && w.last_heartbeat !== null, "idle with a heartbeat");
    const { workers }: any = await (await h.api("/v1/workers/list")).json();
    expect(workers).toHaveLength(1);
    const w = workers[0];
    const port = Number(new URL(spawned.url).port);
    const systemTime = { secs_since_epoch: expect.any(Number), nanos_since_epoch: expect.any(Number) };
    expect(w).toEqual({
      // Upstream fields, names and types (protocol §1).
      id: spawned.worker_id,
      url: spawned.url,
      model_ref: h.modelRef,
      backend: "cpu",
      device: 0,
      state: "idle",
      last_activity: systemTime,
      slots_total: 1,
      slots_available: 1,
      failed_health_checks: 0,
      pid: expect.any(Number),
      restart_count: 0,
      last_restart: null,
      last_heartbeat: systemTime,
      // Hive additions.
      phase: "running",
      port,
      profile: "llm-worker-rbee",
      model_path: h.modelRef.slice("file:".length),
      download_id: null,
      started_at: systemTime,
      ready_at: systemTime,
      health_status: "healthy",
      last_exit: null,
      exits: [],
      next_restart_at: null,
      crash_loop_reason: null,
      // The tiny model at its own 2048 context: 3072 B of weights + 2048 × 1024 B of KV cache (no overhead in test hives).
      memory_estimate_bytes: 3072 + 2048 * 1024,
      memory_used_bytes: null,
      in_flight: 0,
      keep_alive_s: null,
      load_progress: { stage: "ready", source: "hive", worker_stage: null, done: null, total: null, unit: null, fraction: 1, detail: null, at: w.ready_at },
    });
    for (const k of ["last_activity", "last_heartbeat", "started_at", "ready_at"]) expect(isSystemTime(w[k])).toBe(true);
    expect(pidAlive(w.pid)).toBe(true);
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

    // A callback that names no worker is not a worker talking: 401 before any validation.
    const noId = await h.api("/v1/workers/ready", { json: { url: "x" }, auth: false });
    expect(noId.status).toBe(401);

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

    const activityBefore = idle.last_activity;
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
    // The heartbeats did not count as activity (the idle timeout depends on that): not a nanosecond moved.
    const w = (await (await h.api(`/v1/workers/${worker_id}`)).json()) as any;
    expect(w.last_activity).toEqual(activityBefore);
  });
});

describe("stop", () => {
  test("a worker that ignores SIGTERM is killed after the grace, its grandchild too", async () => {
    const pidFile = join(scratchDir(), "grandchild.pid");
    const h = await hive({
      config: { workers: { stop_grace_s: 0.3 } },
      workerEnv: { FAKE_WORKER_IGNORE_SIGTERM: "1", FAKE_WORKER_GRANDCHILD: pidFile },
    });
    const { worker_id } = await h.spawn();
    const idle = await h.waitState(worker_id, isIdle, "idle");
    const grandchild = Number(readFileSync(pidFile, "utf8"));
    cleanups.push(() => killGroup(idle.pid));
    expect(pidAlive(idle.pid)).toBe(true);
    expect(pidAlive(grandchild)).toBe(true);

    const started = performance.now();
    const res = await h.api(`/v1/workers/${worker_id}`, { method: "DELETE" });
    const took = performance.now() - started;
    expect(res.status).toBe(200);
    const final: any = await res.json();
    expect(took).toBeGreaterThanOrEqual(280); // the grace was given before the kill
    expect(final.last_exit).toMatchObject({ reason: "stopped", code: null, signal: "SIGKILL" });
    expect(final.phase).toBe("exited");
    expect(pidAlive(idle.pid)).toBe(false);
    await waitFor(() => !pidAlive(grandchild), { what: "grandchild gone", timeoutMs: 5000 });

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
    // The three stderr lines the fake worker prints when it crashes, after its stdout lines: both
    // streams share the worker's log file (so it outlives the hive) and the tail is the output's.
    const crashLines = [
      "thread 'main' panicked at src/backend/inference.rs:42:9:",
      "fake crash: CUDA error: an illegal memory access was encountered (FAKE_WORKER_CRASH_AFTER_MS)",
      "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
    ];
    expect(gone.last_exit).toMatchObject({ reason: "crashed", code: 1, signal: null });
    const tail: string[] = gone.last_exit.stderr_tail;
    expect(tail.slice(-3)).toEqual(crashLines);
    expect(tail.slice(0, -3)).toEqual(tail.slice(0, -3).filter((l) => /^ +\d+\.\d{6}s  INFO /.test(l)));
    expect(tail[0]).toMatch(/^ +\d+\.\d{6}s  INFO Candle worker starting worker_id=/);
    const { workers }: any = await (await h.api("/v1/workers/list")).json();
    expect(workers).toHaveLength(0);
    const exited = events.find((e) => e.type === "exited");
    expect(exited.data).toMatchObject({ worker_id, reason: "crashed", code: 1, signal: null });

    // Once it is gone, the logs route serves the kept tail, cut to `tail`.
    const logs = async (n: number) => (await (await h.api(`/v1/workers/${worker_id}/logs?tail=${n}`)).json()) as any;
    expect(await logs(5)).toEqual({ worker_id, lines: tail.slice(-5) });
    expect(await logs(2)).toEqual({ worker_id, lines: crashLines.slice(1) });
  });

  test("an external SIGKILL is classified as killed (how fast: bench/lifecycle.ts)", async () => {
    const h = await hive();
    const { worker_id } = await h.spawn();
    const idle = await h.waitState(worker_id, isIdle, "idle");
    const exited = new Promise<any>((resolve) => h.bus.subscribe((e) => e.type === "exited" && resolve(e.data)));
    process.kill(idle.pid, "SIGKILL");
    expect(await exited).toEqual({ worker_id, reason: "killed", code: null, signal: "SIGKILL", message: expect.any(String) });
    const gone = await h.waitState(worker_id, (w) => w.phase === "exited", "exited");
    expect(gone.last_exit).toMatchObject({ reason: "killed", signal: "SIGKILL", code: null });
  });

  test("a worker that fails while loading is load_failed with its stderr", async () => {
    const h = await hive({ workerEnv: { FAKE_WORKER_FAIL_LOAD: "1" } });
    const { worker_id } = await h.spawn();
    const gone = await h.waitState(worker_id, (w) => w.phase === "exited", "exited");
    expect(gone.last_exit).toMatchObject({ reason: "load_failed", code: 3, signal: null });
    // stdout and stderr share the log file: the tail is the whole output, in the order written.
    expect(gone.last_exit.stderr_tail).toEqual([
      expect.stringMatching(/^ +\d+\.\d{6}s  INFO Candle worker starting worker_id=worker-/),
      expect.stringMatching(new RegExp(`^ +\\d+\\.\\d{6}s  INFO Loading model from ${h.modelRef.slice("file:".length)}$`)),
      `error: failed to load model ${h.modelRef.slice("file:".length)}`,
      "error: failed to load model: GGUF header invalid (fake, FAKE_WORKER_FAIL_LOAD)",
      expect.stringMatching(/^ +\d+\.\d{6}s ERROR Model loading failed$/),
    ]);
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
    const expectError = async (res: Response, status: number, error: Record<string, unknown>) => {
      expect(res.status).toBe(status);
      expect(await res.json()).toEqual({ error });
    };
    const roots = [h.modelsDir];
    await expectError(await spawn({}), 500, {
      code: "WORKER_BINARY_NOT_FOUND",
      message: 'worker binary for profile "llm-worker-rbee" not found or not executable (looked at: /nonexistent/llm-worker-rbee); set RBEE_WORKER_BINARY or [workers] binary',
    });
    await expectError(await spawn({ model_ref: "hf:org/repo;reboot" }), 400, {
      code: "INVALID_INPUT",
      message: "model_ref contains the shell metacharacter ';' at position 11; allowed are letters, digits, '-', '_', '/', ':' and '.'",
      details: { field: "model_ref" },
    });
    await expectError(await spawn({ model_ref: "file:/etc/passwd" }), 400, {
      code: "INVALID_INPUT",
      message: `model_ref "/etc/passwd" is outside the allowed model roots (${h.modelsDir})`,
      details: { field: "model_ref", roots },
    });
    await expectError(await spawn({ backend: "cuda;rm" }), 400, {
      code: "INVALID_INPUT",
      message: "backend contains the shell metacharacter ';' at position 4; allowed are letters, digits, '-' and '_'",
      details: { field: "backend" },
    });
    await expectError(await spawn({ backend: "tpu" }), 400, {
      code: "UNSUPPORTED_BACKEND",
      message: 'backend "tpu" is not supported by profile "llm-worker-rbee"; supported: cpu, cuda, metal',
    });
    await expectError(await spawn({ device: -1 }), 400, { code: "INVALID_INPUT", message: "device: Expected integer to be greater or equal to 0" });
    await expectError(await spawn({ profile: "ghost" }), 400, { code: "UNKNOWN_PROFILE", message: 'no worker profile "ghost"; configured: llm-worker-rbee' });
    const unknown = { code: "WORKER_NOT_FOUND", message: "no worker worker-unknown is known to this hive" };
    await expectError(await h.api("/v1/workers/worker-unknown"), 404, unknown);
    await expectError(await h.api("/v1/workers/worker-unknown", { method: "DELETE" }), 404, unknown);
    await expectError(await h.api("/v1/workers/worker-unknown/logs"), 404, unknown);
    // Nothing was registered by the failed spawns, and the daemon still answers.
    expect(((await (await h.api("/v1/workers/list")).json()) as any).workers).toHaveLength(0);
    expect((await h.api("/v1/health")).status).toBe(200);
  });

  test("a file: model that is not on disk is 404 at once; an hf: model not in the catalog is fetched, and its failure ends the worker", async () => {
    const hub = await FakeHub.start({ ggufHeaders: true });
    cleanups.push(() => hub.stop());
    // The hub lists a sha256 its content does not have: planning and the header read succeed, the download fails.
    hub.addRepo({ id: "org/bad-GGUF", files: [{ path: "bad.Q4_K_M.gguf", size: 4096, seed: 5, sha256: "0".repeat(64) }] });
    const h = await hive({ env: { HF_ENDPOINT: hub.url }, config: { downloads: { max_retries: 0 } } });
    const missing = `${h.modelsDir}/missing.gguf`;
    const res = await h.api("/v1/workers/spawn", { json: { model_ref: `file:${missing}`, backend: "cpu", device: 0 } });
    expect(res.status).toBe(404);
    expect(((await res.json()) as any).error.code).toBe("MODEL_NOT_FOUND");

    // The hub is asked before anything is admitted or downloaded: a model it does not have is the spawn's answer.
    const events: any[] = [];
    h.bus.subscribe((e) => events.push({ type: e.type, ...e.data }));
    const absent = await h.api("/v1/workers/spawn", { json: { model_ref: "hf:org/absent-GGUF", backend: "cpu", device: 0 } });
    expect(absent.status).toBe(404);
    const why = `repository org/absent-GGUF not found on ${hub.url} (if it is private, set HF_TOKEN to a token of an account that has access)`;
    expect(await absent.json()).toEqual({ error: { code: "MODEL_NOT_FOUND", message: why, details: { repo: "org/absent-GGUF" } } });
    expect(events).toEqual([]);

    // A download that fails after the spawn answered ends the worker.
    const { worker_id } = await h.spawn({ model_ref: "hf:org/bad-GGUF" });
    const gone = await h.waitState(worker_id, (w) => w.phase === "exited", "spawn failed");
    const download_id = gone.download_id;
    expect(download_id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    const failed = events.find((e) => e.type === "download_failed");
    expect(failed).toMatchObject({ download_id, code: "CHECKSUM_MISMATCH" });
    expect(gone).toMatchObject({ state: "loading", pid: null, model_path: null, last_exit: { reason: "spawn_failed", code: null, signal: null, message: `model download failed: ${failed.message}`, stderr_tail: [] } });
    expect(events.map((e) => e.type).filter((t) => t !== "loading_progress")).toEqual(["download_started", "downloading", "download_failed", "spawn_failed"]);
    expect(events[1]).toEqual({ type: "downloading", worker_id, model_ref: "hf:org/bad-GGUF", download_id });
    expect(((await (await h.api("/v1/workers/list")).json()) as any).workers).toHaveLength(0);
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
    // Loading progress (its output while it loads) aside.
    expect(seen.map((e) => e.event).filter((t) => t !== "loading_progress")).toEqual(["spawned", "callback", "ready", "exited", "stopped"]);
    const ids = seen.map((e) => e.id);
    expect(ids).toEqual(ids.map((_, i) => ids[0] + i)); // increasing, none skipped
    expect(seen.every((e) => e.data.worker_id === worker_id && e.data.type === e.event)).toBe(true);

    const readyId = seen.find((e) => e.event === "ready").id;
    const after = seen.filter((e) => e.id > readyId);
    // The header, and the query parameter for clients that cannot set headers (EventSource).
    for (const init of [{ headers: { "Last-Event-ID": String(readyId) } }, { query: `?last_event_id=${readyId}` }]) {
      const replay = await h.api(`/v1/events${"query" in init ? init.query : ""}`, "headers" in init ? { headers: init.headers } : {});
      const replayed = await readEvents(replay, (ev) => ev.some((e) => e.event === "stopped"));
      expect(replayed.map((e) => e.id)).toEqual(after.map((e) => e.id));
      expect(replayed.map((e) => e.event)).toEqual(after.map((e) => e.event));
    }
  });

  test("a quiet stream gets a keep-alive comment every sse_keepalive_s", async () => {
    const h = await hive({ config: { server: { sse_keepalive_s: 0.05 } } });
    const res = await h.api("/v1/events");
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let text = "";
    while (text.split(": keep-alive\n\n").length < 4) text += decoder.decode((await reader.read()).value);
    await reader.cancel();
    // Nothing happened, so nothing but keep-alive comments (and whatever the stream opens with) was sent.
    expect(text.replace(/^(: [^\n]*\n\n)*/, "")).toBe("");
    expect(text.match(/: keep-alive\n\n/g)!.length).toBeGreaterThanOrEqual(3);
  });

  test("replay from before the buffer starts with a replay_gap event", async () => {
    const h = await hive({ config: { server: { events_buffer: 3 } } });
    for (let i = 0; i < 5; i++) h.bus.publish("health_recovered", { worker_id: `worker-${i}` });
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
    await waitFor(() => h.bus.subscriberCount === before, { what: "unsubscribed", timeoutMs: 5000 });
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
    const wrapper = join(scratchDir(), "llama-server");
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
