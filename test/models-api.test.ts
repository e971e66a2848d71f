/** Model routes over real HTTP: a hive with its real catalog file, downloading from the fake hub. */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, lstatSync, readFileSync } from "node:fs";
import { startTestHive, waitFor, type TestHive } from "./helpers.ts";
import { FakeHub } from "./fixtures/fake-hub.ts";

const SIZE = 600_000;
const hives: TestHive[] = [];
const hubs: FakeHub[] = [];
afterEach(async () => {
  await Promise.all(hives.splice(0).map((h) => h.close()));
  await Promise.all(hubs.splice(0).map((h) => h.stop()));
});

async function setup(opts: { token?: string; hfToken?: string; workerEnv?: Record<string, string> } = {}) {
  const hub = await FakeHub.start({ chunkBytes: 16 * 1024 });
  hubs.push(hub);
  hub.addRepo({
    id: "org/tiny-GGUF",
    files: [
      { path: "tiny.Q4_K_M.gguf", size: SIZE, seed: 1 },
      { path: "tiny.Q8_0.gguf", size: SIZE, seed: 2 },
      { path: "README.md", content: "# tiny" },
    ],
  });
  hub.addRepo({ id: "org/gated-GGUF", files: [{ path: "g.Q4_K_M.gguf", size: 1000, seed: 3 }], gated: { token: "hf_right_token", status: 403 } });
  const h = await startTestHive({
    token: opts.token,
    env: { HF_ENDPOINT: hub.url, ...(opts.hfToken ? { HF_TOKEN: opts.hfToken } : {}) },
    config: { downloads: { part_size_mb: 0.25, parallel_parts: 2, disk_margin_mb: 0, progress_interval_s: 0.01, max_retries: 2 } },
    workerEnv: opts.workerEnv,
  });
  hives.push(h);
  return { hub, h };
}

/** Read an SSE body into its `data:` payloads (and ids) until [DONE] or the stream ends. */
async function readProgress(res: Response, timeoutMs = 5000) {
  const text = await Promise.race([res.text(), Bun.sleep(timeoutMs).then(() => "TIMEOUT")]);
  const events: Array<{ id?: number; data: any }> = [];
  for (const block of text.split("\n\n")) {
    const data = /^data: (.*)$/m.exec(block)?.[1];
    if (data === undefined) continue;
    const id = /^id: (\d+)$/m.exec(block)?.[1];
    events.push({ id: id ? Number(id) : undefined, data: data === "[DONE]" ? "[DONE]" : JSON.parse(data) });
  }
  return { events, raw: text };
}

describe("downloads", () => {
  test("download → live progress → [DONE] → catalog; a second request is answered from the cache", async () => {
    const { h } = await setup();
    const busEvents: any[] = [];
    h.bus.subscribe((e) => busEvents.push(e));
    const res = await h.api("/v1/models/download", { json: { model_ref: "hf:org/tiny-GGUF" } });
    expect(res.status).toBe(200);
    const started: any = await res.json();
    expect(started.download_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(started.local_path).toBeNull();

    const progress = await h.api(`/v1/models/download/progress?id=${started.download_id}`);
    expect(progress.headers.get("content-type")).toContain("text/event-stream");
    const { events } = await readProgress(progress);
    expect(events.at(-1)!.data).toBe("[DONE]");
    const terminal = events.at(-2)!.data;
    expect(terminal.stage).toBe("complete");
    expect(terminal.local_path).toEndWith("tiny.Q4_K_M.gguf");
    const downloading = events.filter((e) => e.data.stage === "downloading");
    expect(downloading.length).toBeGreaterThan(0);
    for (const e of downloading) {
      expect(typeof e.data.bytes_downloaded).toBe("number");
      if (e.data.phase !== "planning") expect(e.data.bytes_total).toBe(SIZE);
      expect(typeof e.data.speed_mbps).toBe("number");
      expect(typeof e.id).toBe("number");
    }

    const { models }: any = await (await h.api("/v1/models")).json();
    expect(models).toHaveLength(1);
    expect(models[0]).toMatchObject({ model_ref: "hf:org/tiny-GGUF", provider: "hf", quantization: "Q4_K_M", size_bytes: SIZE });
    expect(lstatSync(models[0].local_path).isSymbolicLink()).toBe(true); // HF cache layout snapshot entry
    expect(models[0].local_path).toContain("models--org--tiny-GGUF/snapshots/");

    // Downloads are on the one event bus too (GET /v1/events, metrics).
    const lifecycle = busEvents.filter((e) => e.type.startsWith("download_"));
    expect(lifecycle.map((e) => e.type)).toEqual(["download_started", "download_complete"]);
    expect(lifecycle[1].data).toMatchObject({ download_id: started.download_id, model_ref: "hf:org/tiny-GGUF", bytes: SIZE });
    const metrics = await (await h.api("/metrics")).text();
    expect(metrics).toContain('rbee_hive_downloads_total{outcome="complete"} 1');
    expect(metrics).toContain(`rbee_hive_download_bytes_total ${SIZE}`);

    const again: any = await (await h.api("/v1/models/download", { json: { model_ref: "hf:org/tiny-GGUF" } })).json();
    expect(again).toMatchObject({ download_id: "cached", local_path: models[0].local_path });

    // The upstream catalog table holds the row, in the real SQLite file under the data dir.
    const { Database } = await import("bun:sqlite");
    const db = new Database(`${h.dataDir}/models.db`, { readonly: true });
    const row: any = db.query("SELECT reference, provider, size_bytes FROM models").get();
    db.close();
    expect(row).toEqual({ reference: "org/tiny-GGUF", provider: "hf", size_bytes: SIZE });
  });

  test("a late subscriber gets the terminal event and [DONE]; Last-Event-ID replays", async () => {
    const { h } = await setup();
    const { download_id }: any = await (await h.api("/v1/models/download", { json: { model_ref: "hf:org/tiny-GGUF:Q8_0" } })).json();
    await waitFor(async () => ((await (await h.api("/v1/models")).json()) as any).models.length === 1, { what: "catalog" });
    const late = await readProgress(await h.api(`/v1/models/download/progress?id=${download_id}`));
    expect(late.events.map((e) => e.data === "[DONE]" ? "[DONE]" : e.data.stage)).toEqual(["complete", "[DONE]"]);
    const completeId = late.events[0]!.id!;
    const replay = await readProgress(
      await h.api(`/v1/models/download/progress?id=${download_id}`, { headers: { "Last-Event-ID": String(completeId - 1) } }),
    );
    expect(replay.events[0]!.id).toBe(completeId);

    const { downloads }: any = await (await h.api("/v1/models/downloads")).json();
    expect(downloads).toHaveLength(1);
    expect(downloads[0]).toMatchObject({ id: download_id, model_ref: "hf:org/tiny-GGUF:Q8_0", state: "complete", bytes_downloaded: SIZE });
  });

  test("unknown download id → 404; gated and unknown repos end with their codes", async () => {
    const { h } = await setup();
    const missing = await h.api("/v1/models/download/progress?id=nope");
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as any).error.code).toBe("DOWNLOAD_NOT_FOUND");

    for (const [ref, code] of [
      ["hf:org/gated-GGUF", "MODEL_GATED"],
      ["hf:org/absent-GGUF", "MODEL_NOT_FOUND"],
    ] as const) {
      const { download_id }: any = await (await h.api("/v1/models/download", { json: { model_ref: ref } })).json();
      const { events } = await readProgress(await h.api(`/v1/models/download/progress?id=${download_id}`));
      expect(events.at(-2)!.data).toMatchObject({ stage: "error", code });
      expect(events.at(-1)!.data).toBe("[DONE]");
    }
    const bad = await h.api("/v1/models/download", { json: { model_ref: "hf:org/x;rm" } });
    expect(bad.status).toBe(400);
    expect(((await (await h.api("/v1/models")).json()) as any).models).toHaveLength(0);
  });

  test("HF_TOKEN unlocks a gated repo, goes only to the hub's host and never into the logs", async () => {
    const { h, hub } = await setup({ hfToken: "hf_right_token" });
    const { download_id }: any = await (await h.api("/v1/models/download", { json: { model_ref: "hf:org/gated-GGUF" } })).json();
    const { events } = await readProgress(await h.api(`/v1/models/download/progress?id=${download_id}`));
    expect(events.at(-2)!.data.stage).toBe("complete");
    const cdn = hub.log.filter((e) => e.server === "cdn");
    expect(cdn.length).toBeGreaterThan(0);
    expect(cdn.every((e) => e.authorization === null)).toBe(true);
    expect(hub.log.filter((e) => e.server === "hub").every((e) => e.authorization === "Bearer hf_right_token")).toBe(true);
    expect(h.logs.join("\n")).not.toContain("hf_right_token");
  });

  test("cancel keeps partials for resume; ?purge=true deletes them", async () => {
    const { h, hub } = await setup();
    hub.addFault({ kind: "stall", atByte: 100_000, ms: 10_000, on: "cdn", times: 10 });
    const { download_id }: any = await (await h.api("/v1/models/download", { json: { model_ref: "hf:org/tiny-GGUF" } })).json();
    await waitFor(async () => {
      const d: any = ((await (await h.api("/v1/models/downloads")).json()) as any).downloads[0];
      return d.bytes_downloaded > 0;
    }, { what: "some bytes" });
    const res = await h.api(`/v1/models/download/${download_id}?purge=true`, { method: "DELETE" });
    expect(res.status).toBe(200);
    const job: any = await res.json();
    expect(job.state).toBe("cancelled");
    const partials = new Bun.Glob("**/*.rbee-partial*").scanSync({ cwd: h.modelsDir, dot: true });
    expect([...partials]).toHaveLength(0);
    expect((await h.api(`/v1/models/download/nope`, { method: "DELETE" })).status).toBe(404);
  });
});

describe("spawn with hf: models", () => {
  test("a model not in the catalog is downloaded by the spawn, which answers at once", async () => {
    const { h } = await setup();
    const res = await h.api("/v1/workers/spawn", { json: { model_ref: "hf:org/tiny-GGUF", backend: "cpu", device: 0 } });
    expect(res.status).toBe(200);
    const { worker_id }: any = await res.json();
    const first: any = await (await h.api(`/v1/workers/${worker_id}`)).json();
    expect(first.state).toBe("loading");
    if (first.phase === "downloading") expect(first.download_id).toMatch(/^[0-9a-f-]{36}$/);
    const idle = await h.waitState(worker_id, (w) => w.state === "idle", "idle after download", 10000);
    expect(idle.download_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(idle.model_path).toContain("models--org--tiny-GGUF/snapshots/");
    expect(readFileSync(idle.model_path).length).toBe(SIZE);
    const models: any = await (await h.api("/v1/models")).json();
    expect(models.models[0].last_used_at).not.toBeNull();
  });

  test("a spawn that joins a running download does not transfer twice", async () => {
    const { h, hub } = await setup();
    const dl: any = await (await h.api("/v1/models/download", { json: { model_ref: "hf:org/tiny-GGUF" } })).json();
    const spawned: any = await (await h.api("/v1/workers/spawn", { json: { model_ref: "hf:org/tiny-GGUF", backend: "cpu", device: 0 } })).json();
    const idle = await h.waitState(spawned.worker_id, (w) => w.state === "idle", "idle", 10000);
    expect(idle.download_id === null || idle.download_id === dl.download_id).toBe(true);
    expect(hub.bytesServed((e) => e.path.includes("blobs") || e.path.includes("resolve"))).toBeLessThanOrEqual(SIZE + 100);
  });

  test("a model the hub does not have fails the worker with the download's error", async () => {
    const { h } = await setup();
    const res = await h.api("/v1/workers/spawn", { json: { model_ref: "hf:org/absent-GGUF", backend: "cpu", device: 0 } });
    expect(res.status).toBe(200);
    const { worker_id }: any = await res.json();
    const gone = await h.waitState(worker_id, (w) => w.phase === "exited", "spawn failed");
    expect(gone.last_exit.reason).toBe("spawn_failed");
    expect(gone.last_exit.message).toContain("not found");
  });
});

describe("deleting models", () => {
  test("409 while a worker uses it; afterwards the row and the files are gone", async () => {
    const { h } = await setup();
    const spawned: any = await (await h.api("/v1/workers/spawn", { json: { model_ref: "hf:org/tiny-GGUF", backend: "cpu", device: 0 } })).json();
    const idle = await h.waitState(spawned.worker_id, (w) => w.state === "idle", "idle", 10000);
    const blobPath = ((await (await h.api("/v1/models")).json()) as any).models[0].files[0].blob_path;
    expect(existsSync(blobPath)).toBe(true);

    const busy = await h.api("/v1/models?model_ref=hf:org/tiny-GGUF", { method: "DELETE" });
    expect(busy.status).toBe(409);
    const body: any = await busy.json();
    expect(body.error.code).toBe("MODEL_IN_USE");
    expect(body.error.details.worker_ids).toEqual([spawned.worker_id]);

    await h.api(`/v1/workers/${spawned.worker_id}`, { method: "DELETE" });
    const ok = await h.api("/v1/models?model_ref=hf:org/tiny-GGUF", { method: "DELETE" });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual({ model_ref: "hf:org/tiny-GGUF", removed: true, freed_bytes: SIZE });
    expect(existsSync(blobPath)).toBe(false);
    expect(existsSync(idle.model_path)).toBe(false);
    expect(((await (await h.api("/v1/models")).json()) as any).models).toHaveLength(0);
    expect((await h.api("/v1/models?model_ref=hf:org/tiny-GGUF", { method: "DELETE" })).status).toBe(404);
  });

  test("a file: model is unregistered but its file is left alone", async () => {
    const { h } = await setup();
    const dl: any = await (await h.api("/v1/models/download", { json: { model_ref: h.modelRef } })).json();
    expect(dl.download_id).toBe("cached");
    const res = await h.api(`/v1/models?model_ref=${encodeURIComponent(h.modelRef)}`, { method: "DELETE" });
    expect(res.status).toBe(200);
    expect(existsSync(h.modelRef.slice("file:".length))).toBe(true);
  });
});
