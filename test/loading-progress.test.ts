/**
 * Loading progress relayed into the worker record and the events: the worker's own progress
 * stream, its output for profiles without one, and the model download before it.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { FakeHub } from "./fixtures/fake-hub.ts";
import { startTestHive, type TestHive } from "./helpers.ts";

const hives: TestHive[] = [];
const cleanups: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  await Promise.all(hives.splice(0).map((h) => h.close()));
  for (const c of cleanups.splice(0)) await c();
});

async function hive(opts: Parameters<typeof startTestHive>[0] = {}) {
  const h = await startTestHive(opts);
  hives.push(h);
  return h;
}

/** The `loading_progress` events of the hive, payloads only. */
function progressEvents(h: TestHive) {
  const seen: any[] = [];
  h.bus.on("loading_progress", (d) => seen.push(d));
  return seen;
}

const empty = { worker_stage: null, done: null, total: null, unit: null, fraction: null, detail: null };

describe("loading progress", () => {
  test("the worker's /v1/loading/progress stream goes into the record and the events stream, then ready", async () => {
    const h = await hive({ workerEnv: { FAKE_WORKER_PROGRESS_STAGES: "4", FAKE_WORKER_LOAD_MS: "400" } });
    const seen = progressEvents(h);
    const { worker_id } = await h.spawn();
    const loading = await h.waitState(worker_id, (w) => w.load_progress?.source === "worker", "progress from the worker");
    expect(loading).toMatchObject({ state: "loading", load_progress: { stage: "loading", source: "worker", worker_stage: "loading_to_vram", unit: "layers", total: 4 } });
    const ready = await h.waitState(worker_id, (w) => w.state === "idle", "idle");
    expect(ready.load_progress).toEqual({ stage: "ready", source: "hive", ...empty, fraction: 1, at: ready.ready_at });

    // Throttled (one update a second, a new stage at once): the first layer, then the worker's ready.
    const fromWorker = seen.filter((e) => e.worker_id === worker_id && e.source === "worker");
    expect(fromWorker).toEqual([
      { worker_id, stage: "loading", source: "worker", ...empty, worker_stage: "loading_to_vram", done: 1, total: 4, unit: "layers", fraction: 0.25 },
      { worker_id, stage: "loading", source: "worker", ...empty, worker_stage: "ready", fraction: 1 },
    ]);
    // The same events on GET /v1/events.
    const res = await h.api("/v1/events?last_event_id=0");
    const reader = res.body!.getReader();
    let text = "";
    while (!text.includes('"worker_stage":"ready"')) text += new TextDecoder().decode((await reader.read()).value);
    await reader.cancel();
    expect(text).toContain(`event: loading_progress\ndata: {"type":"loading_progress","time":`);
    expect(text).toContain(`"worker_id":"${worker_id}","stage":"loading","source":"worker","worker_stage":"loading_to_vram","done":1,"total":4,"unit":"layers","fraction":0.25,"detail":null}`);
  });

  test("a worker without a progress stream: its output is the sign of life that is relayed", async () => {
    const h = await hive({
      config: {
        workers: {
          profiles: {
            "llama-fake": { args: ["--model", "{model_path}", "--port", "{port}"], readiness: "http", healthy_status: ["ok"], env: { FAKE_WORKER_MODE: "llama-server" } },
          },
        },
      },
      workerEnv: { FAKE_WORKER_LOAD_MS: "300", FAKE_WORKER_LOAD_OUTPUT_MS: "20" },
    });
    const seen = progressEvents(h);
    const { worker_id } = await h.spawn({ profile: "llama-fake" });
    const loading = await h.waitState(worker_id, (w) => w.load_progress?.source === "output", "progress from the output");
    expect(loading.load_progress).toMatchObject({ stage: "loading", source: "output", worker_stage: null, fraction: null });
    await h.waitState(worker_id, (w) => w.state === "idle", "idle");
    const mine = seen.filter((e) => e.worker_id === worker_id);
    // Its first line went out at once; the later ones within the same second were still held back
    // when it became ready, and were dropped: ready says the rest.
    expect(mine).toHaveLength(1);
    expect(mine[0]).toMatchObject({ stage: "loading", source: "output", ...empty, detail: expect.stringMatching(/^ +\d+\.\d{6}s  INFO HTTP server listening on 127\.0\.0\.1:\d+$/) });
  });

  test("the model download comes first in the same bar: bytes of the hub download, then loading, then ready", async () => {
    const hub = await FakeHub.start({ ggufHeaders: true });
    cleanups.push(() => hub.stop());
    // The spawn reads the GGUF header first (range requests over the first 2 MB): the stall is past it.
    const size = 8 * 1024 * 1024;
    hub.addRepo({ id: "org/slow-GGUF", files: [{ path: "slow.Q4_K_M.gguf", size, seed: 3 }] });
    hub.addFault({ kind: "stall", atByte: size / 2, on: "cdn" });
    // It loads for 300 ms, printing as it goes: its output (followed from its log file every 50 ms)
    // reaches the hive while it loads.
    const h = await hive({ env: { HF_ENDPOINT: hub.url }, workerEnv: { FAKE_WORKER_LOAD_MS: "300", FAKE_WORKER_LOAD_OUTPUT_MS: "20" } });
    const seen = progressEvents(h);
    const { worker_id } = await h.spawn({ model_ref: "hf:org/slow-GGUF" });
    const half = await h.waitState(worker_id, (w) => w.load_progress?.done === size / 2, "half downloaded");
    expect(half).toMatchObject({
      state: "loading",
      phase: "downloading",
      load_progress: { stage: "downloading", source: "download", worker_stage: null, done: size / 2, total: size, unit: "bytes", fraction: 0.5, detail: "slow.Q4_K_M.gguf" },
    });
    hub.releaseStalls();
    const ready = await h.waitState(worker_id, (w) => w.state === "idle", "idle", 10_000);
    expect(ready.load_progress).toMatchObject({ stage: "ready", fraction: 1 });
    const stages = seen.filter((e) => e.worker_id === worker_id).map((e) => `${e.stage}/${e.source}`);
    // The download's bytes first, then the load (its output, and the worker's own stream if the hive
    // reached it before the worker was confirmed ready): one bar that only moves forward.
    const firstLoad = stages.findIndex((s) => s.startsWith("loading/"));
    expect(firstLoad).toBeGreaterThan(0);
    expect(stages.slice(0, firstLoad).every((s) => s === "downloading/download")).toBe(true);
    expect(stages.slice(firstLoad).every((s) => s === "loading/output" || s === "loading/worker")).toBe(true);
  });
});
