/** Model routes over real HTTP: a hive with its real catalog file, downloading from the fake hub. */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, lstatSync, readFileSync } from "node:fs";
import { startTestHive, waitFor, type TestHive } from "./helpers.ts";
import { FakeHub, fakeCommit } from "./fixtures/fake-hub.ts";

const SIZE = 600_000;
/** A model larger than the header reader's first 2 MB chunk, and where its download is held. */
const BIG = 3_000_000;
const STALL_AT = 2_500_000;
const hives: TestHive[] = [];
const hubs: FakeHub[] = [];
afterEach(async () => {
  await Promise.all(hives.splice(0).map((h) => h.close()));
  await Promise.all(hubs.splice(0).map((h) => h.stop()));
});

async function setup(opts: { token?: string; hfToken?: string; workerEnv?: Record<string, string>; hubHost?: string } = {}) {
  // The hive keeps a model's GGUF header: the hub's .gguf files are valid GGUF.
  const hub = await FakeHub.start({ chunkBytes: 16 * 1024, hubHost: opts.hubHost, ggufHeaders: true });
  hubs.push(hub);
  const tiny = hub.addRepo({
    id: "org/tiny-GGUF",
    files: [
      { path: "tiny.Q4_K_M.gguf", size: SIZE, seed: 1 },
      { path: "tiny.Q8_0.gguf", size: SIZE, seed: 2 },
      { path: "README.md", content: "# tiny" },
    ],
  });
  // Larger than the 2 MB the header reader fetches: a stall past that holds the download, never the header read.
  hub.addRepo({ id: "org/big-GGUF", files: [{ path: "big.Q4_K_M.gguf", size: BIG, seed: 4 }] });
  hub.addRepo({ id: "org/gated-GGUF", files: [{ path: "g.Q4_K_M.gguf", size: 1000, seed: 3 }], gated: { token: "hf_right_token", status: 403 } });
  const h = await startTestHive({
    token: opts.token,
    env: { HF_ENDPOINT: hub.url, ...(opts.hfToken ? { HF_TOKEN: opts.hfToken } : {}) },
    config: { downloads: { part_size_mb: 0.25, parallel_parts: 2, disk_margin_mb: 0, progress_interval_s: 0.01, max_retries: 2 } },
    workerEnv: opts.workerEnv,
  });
  hives.push(h);
  return { hub, h, commit: tiny.commit };
}

/** Let a transfer held by a stall fault go on, once it is really held there. */
async function releaseOnceStalled(hub: FakeHub) {
  await waitFor(() => hub.stalledCount > 0, { what: "the transfer to reach the stall" });
  hub.releaseStalls();
}

/** Read an SSE body into its `data:` payloads (and ids) until the stream ends (10 s hang guard). */
async function readProgress(res: Response, opts: { onFirstEvent?: () => void } = {}) {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let text = "";
  const guard = setTimeout(() => void reader.cancel(), 10_000);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    const before = text;
    text += decoder.decode(value, { stream: true });
    if (!before.includes("\ndata: ") && text.includes("\ndata: ")) opts.onFirstEvent?.();
  }
  clearTimeout(guard);
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
    const { h, hub, commit } = await setup();
    hub.addFault({ kind: "stall", atByte: 100_000, ms: 60_000, on: "cdn" });
    const busEvents: any[] = [];
    h.bus.subscribe((e) => busEvents.push(e));
    const res = await h.api("/v1/models/download", { json: { model_ref: "hf:org/tiny-GGUF" } });
    expect(res.status).toBe(200);
    const started: any = await res.json();
    expect(started.download_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(started.local_path).toBeNull();

    const progress = await h.api(`/v1/models/download/progress?id=${started.download_id}`);
    expect(progress.headers.get("content-type")).toContain("text/event-stream");
    // The transfer is held at byte 100 000 until this subscriber has seen its first event.
    const { events } = await readProgress(progress, { onFirstEvent: () => void releaseOnceStalled(hub) });
    expect(events.at(-1)!.data).toBe("[DONE]");
    const localPath = `${h.modelsDir}/models--org--tiny-GGUF/snapshots/${commit}/tiny.Q4_K_M.gguf`;
    expect(events.at(-2)!.data).toEqual({ stage: "complete", local_path: localPath });
    const downloading = events.slice(0, -2);
    expect(downloading.length).toBeGreaterThanOrEqual(2); // the held state, then at least the last bytes
    const ids = events.slice(0, -1).map((e) => e.id!);
    expect(ids).toEqual(ids.map((_, i) => ids[0]! + i));
    for (const e of downloading) {
      // Exactly the README's shape: a planning event before the sizes are known, then per-file progress.
      expect(e.data).toEqual(
        e.data.phase === "planning"
          ? { stage: "downloading", bytes_downloaded: 0, bytes_total: 0, speed_mbps: 0, phase: "planning" }
          : {
              stage: "downloading",
              bytes_downloaded: expect.any(Number),
              bytes_total: SIZE,
              speed_mbps: expect.any(Number),
              file: "tiny.Q4_K_M.gguf",
              // done only once all its bytes are in (then verified and renamed: 0 until that ends)
              files_done: e.data.bytes_downloaded < SIZE ? 0 : [0, 1].includes(e.data.files_done) ? e.data.files_done : "0 or 1",
              files_total: 1,
              phase: "downloading",
            },
      );
    }
    expect(downloading.at(-1)!.data).toMatchObject({ bytes_downloaded: SIZE, files_done: 1 });
    const bytes = downloading.map((e) => e.data.bytes_downloaded);
    expect([...bytes].sort((a, b) => a - b)).toEqual(bytes);

    const { models }: any = await (await h.api("/v1/models")).json();
    expect(models).toHaveLength(1);
    expect(models[0]).toMatchObject({ model_ref: "hf:org/tiny-GGUF", provider: "hf", revision: "main", commit, quantization: "Q4_K_M", size_bytes: SIZE, local_path: localPath });
    expect(lstatSync(models[0].local_path).isSymbolicLink()).toBe(true); // HF cache layout snapshot entry

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
    // The hub answers as "localhost", its CDN as "127.0.0.1": another host name, not only another port.
    const { h, hub } = await setup({ hfToken: "hf_right_token", hubHost: "localhost" });
    expect(new URL(hub.url).hostname).toBe("localhost");
    expect(new URL(hub.cdnUrl).hostname).toBe("127.0.0.1");
    const { download_id }: any = await (await h.api("/v1/models/download", { json: { model_ref: "hf:org/gated-GGUF" } })).json();
    const { events } = await readProgress(await h.api(`/v1/models/download/progress?id=${download_id}`));
    expect(events.at(-2)!.data.stage).toBe("complete");
    const cdn = hub.log.filter((e) => e.server === "cdn");
    const onHub = hub.log.filter((e) => e.server === "hub");
    expect(cdn.length).toBeGreaterThan(0);
    expect(onHub.length).toBeGreaterThan(0);
    expect(cdn.map((e) => [new URL(`http://${e.host}`).hostname, e.authorization])).toEqual(cdn.map(() => ["127.0.0.1", null]));
    expect(onHub.map((e) => [new URL(`http://${e.host}`).hostname, e.authorization])).toEqual(onHub.map(() => ["localhost", "Bearer hf_right_token"]));
    expect(hub.bytesServed((e) => e.server === "cdn")).toBe(1000);
    expect(h.logs.join("\n")).not.toContain("hf_right_token");
  });

  test("cancel keeps partials for resume; the next download resumes them; ?purge=true deletes them", async () => {
    const { h, hub } = await setup();
    const blobs = `${h.modelsDir}/models--org--tiny-GGUF/blobs`;
    const partials = () => [...new Bun.Glob("**/*.rbee-partial*").scanSync({ cwd: h.modelsDir, dot: true })].sort();
    const heldDownload = async () => {
      hub.addFault({ kind: "stall", atByte: 100_000, ms: 60_000, on: "cdn", times: 10 });
      const { download_id }: any = await (await h.api("/v1/models/download", { json: { model_ref: "hf:org/tiny-GGUF" } })).json();
      await waitFor(() => hub.stalledCount > 0, { what: "the transfer held at byte 100 000" });
      await waitFor(async () => ((await (await h.api("/v1/models/downloads")).json()) as any).downloads.find((d: any) => d.id === download_id).bytes_downloaded >= 100_000, { what: "100 000 bytes on disk" });
      hub.faults.length = 0; // no further stalls: a resumed transfer runs through
      return download_id as string;
    };

    // Plain cancel: the partial file and its resume state stay.
    const first = await heldDownload();
    const res = await h.api(`/v1/models/download/${first}`, { method: "DELETE" });
    expect(res.status).toBe(200);
    expect(((await res.json()) as any).state).toBe("cancelled");
    const sha = hub.log.find((e) => e.server === "cdn")!.path.split("/blobs/")[1]!.split("?")[0]!;
    expect(partials()).toEqual([`models--org--tiny-GGUF/blobs/${sha}.rbee-partial`, `models--org--tiny-GGUF/blobs/${sha}.rbee-partial.json`]);

    // The next download resumes them: bytes already on disk are not fetched again.
    hub.clearLog();
    const { download_id: second }: any = await (await h.api("/v1/models/download", { json: { model_ref: "hf:org/tiny-GGUF" } })).json();
    expect(second).not.toBe(first);
    const { events } = await readProgress(await h.api(`/v1/models/download/progress?id=${second}`));
    expect(events.at(-2)!.data.stage).toBe("complete");
    expect(hub.bytesServed((e) => e.content)).toBeLessThanOrEqual(SIZE - 100_000);
    expect(partials()).toEqual([]);

    // Cancel with ?purge=true: nothing is left behind.
    expect((await h.api("/v1/models?model_ref=hf:org/tiny-GGUF", { method: "DELETE" })).status).toBe(200);
    const third = await heldDownload();
    const purged = await h.api(`/v1/models/download/${third}?purge=true`, { method: "DELETE" });
    expect(purged.status).toBe(200);
    expect(((await purged.json()) as any).state).toBe("cancelled");
    expect(partials()).toEqual([]);
    expect(existsSync(`${blobs}/${sha}`)).toBe(false);
    expect((await h.api(`/v1/models/download/nope`, { method: "DELETE" })).status).toBe(404);
  });
});

describe("model_ref parsing", () => {
  test("an unknown provider is 400 UNSUPPORTED_PROVIDER with one message on every route", async () => {
    const h = await startTestHive();
    hives.push(h);
    const ref = "s3:bucket/x";
    const answers = [
      await h.api("/v1/models/download", { json: { model_ref: ref } }),
      await h.api("/v1/workers/spawn", { json: { model_ref: ref, backend: "cpu", device: 0 } }),
      await h.api(`/v1/models?model_ref=${ref}`, { method: "DELETE" }),
    ];
    for (const res of answers) {
      expect(res.status).toBe(400);
      expect(await res.json()).toEqual({
        error: {
          code: "UNSUPPORTED_PROVIDER",
          message: 'model_ref "s3:bucket/x": unknown provider "s3" (supported: "hf", "file")',
          details: { field: "model_ref" },
        },
      });
    }
  });
});

describe("spawn with hf: models", () => {
  test("a model not in the catalog is downloaded by the spawn, which answers at once", async () => {
    const { h, hub } = await setup();
    // The transfer is held until the test has seen the worker waiting for it (past the header the spawn reads first).
    hub.addFault({ kind: "stall", atByte: STALL_AT, ms: 60_000, on: "cdn" });
    const res = await h.api("/v1/workers/spawn", { json: { model_ref: "hf:org/big-GGUF", backend: "cpu", device: 0 } });
    expect(res.status).toBe(200);
    const { worker_id }: any = await res.json();
    await waitFor(() => hub.stalledCount > 0, { what: `the transfer held at byte ${STALL_AT}` });
    const first: any = await (await h.api(`/v1/workers/${worker_id}`)).json();
    expect(first).toMatchObject({ state: "loading", phase: "downloading", pid: null, model_path: null });
    expect(first.download_id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    const { downloads }: any = await (await h.api("/v1/models/downloads")).json();
    expect(downloads.map((d: any) => [d.id, d.state])).toEqual([[first.download_id, "downloading"]]);
    hub.releaseStalls();
    const idle = await h.waitState(worker_id, (w) => w.state === "idle", "idle after download", 10000);
    expect(idle.download_id).toBe(first.download_id);
    expect(idle.model_path).toBe(`${h.modelsDir}/models--org--big-GGUF/snapshots/${fakeCommit("org/big-GGUF")}/big.Q4_K_M.gguf`);
    expect(readFileSync(idle.model_path).length).toBe(BIG);
    const models: any = await (await h.api("/v1/models")).json();
    expect(models.models[0].last_used_at).not.toBeNull();
  });

  test("a spawn that joins a running download does not transfer twice", async () => {
    const { h, hub } = await setup();
    // Held mid-transfer, so the spawn certainly finds the download running.
    hub.addFault({ kind: "stall", atByte: STALL_AT, ms: 60_000, on: "cdn" });
    const dl: any = await (await h.api("/v1/models/download", { json: { model_ref: "hf:org/big-GGUF" } })).json();
    await waitFor(() => hub.stalledCount > 0, { what: `the transfer held at byte ${STALL_AT}` });
    const spawned: any = await (await h.api("/v1/workers/spawn", { json: { model_ref: "hf:org/big-GGUF", backend: "cpu", device: 0 } })).json();
    const waiting: any = await (await h.api(`/v1/workers/${spawned.worker_id}`)).json();
    expect(waiting).toMatchObject({ phase: "downloading", download_id: dl.download_id });
    hub.releaseStalls();
    const idle = await h.waitState(spawned.worker_id, (w) => w.state === "idle", "idle", 10000);
    expect(idle.download_id).toBe(dl.download_id);
    expect(((await (await h.api("/v1/models/downloads")).json()) as any).downloads).toHaveLength(1);
    // The model's bytes once; besides them only the spawn's header read (its first 2 MB chunk).
    const header = (e: { range: string | null }) => e.range === "bytes=0-1999999";
    expect(hub.bytesServed((e) => e.content && !header(e))).toBe(BIG);
    expect(hub.contentRequests(header).map((e) => [e.server, e.bytes])).toEqual([["cdn", 2_000_000]]);
  });

  test("a model the hub does not have is the spawn's answer: 404, and no worker", async () => {
    const { h, hub } = await setup();
    const res = await h.api("/v1/workers/spawn", { json: { model_ref: "hf:org/absent-GGUF", backend: "cpu", device: 0 } });
    expect(res.status).toBe(404);
    expect(await res.json()).toEqual({
      error: {
        code: "MODEL_NOT_FOUND",
        message: `repository org/absent-GGUF not found on ${hub.url} (if it is private, set HF_TOKEN to a token of an account that has access)`,
        details: { repo: "org/absent-GGUF" },
      },
    });
    expect(((await (await h.api("/v1/workers/list")).json()) as any).workers).toEqual([]);
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
