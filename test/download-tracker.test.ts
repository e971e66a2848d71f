/**
 * DownloadTracker with the real provisioner and catalog against the fake hub (loopback HTTP).
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DownloadTracker, type DownloadTrackerOptions, type TrackedEvent } from "../src/models/download-tracker.ts";
import { ModelCatalog, optionalRevision, parseModelRef } from "../src/models/model-catalog/index.ts";
import { Provisioner, type ProvisionerOptions } from "../src/models/provisioner/index.ts";
import type { Clock } from "../src/shared/clock.ts";
import { systemClock } from "../src/shared/clock.ts";
import { HiveError } from "../src/shared/errors.ts";
import { catalogMetadata } from "../src/resources/model-footprint.ts";
import { FakeHub, MIN_GGUF_BYTES } from "./fixtures/fake-hub.ts";
import { modelDefaults, rejection } from "./helpers.ts";

const PART = 256 * 1024;
const SIZE = 1_000_000;
const REF = "hf:org/m-GGUF";

let dir: string;
let hub: FakeHub;
let catalog: ModelCatalog;
let tracker: DownloadTracker;
let sha: string;

function make(trackerOpts: Partial<DownloadTrackerOptions> = {}, provOpts: Partial<ProvisionerOptions> = {}) {
  const provisioner = new Provisioner({
    ...modelDefaults().provisioner,
    modelsDir: join(dir, "models"),
    endpoint: hub.url,
    partSizeBytes: PART,
    maxParallelParts: 4,
    initialParallelParts: 4,
    retryBaseMs: 5,
    retryMaxMs: 50,
    stallTimeoutMs: 5000,
    diskMarginBytes: 0,
    ...provOpts,
  });
  tracker = new DownloadTracker({ ...modelDefaults().tracker, catalog, provisioner, progressIntervalMs: 20, ...trackerOpts });
  return tracker;
}

/** start() as the edge calls it (ModelService): the ref parsed and the revision checked first. */
async function start(modelRef: string, opts: { revision?: string; awaitPlan?: boolean } = {}) {
  return tracker.start(parseModelRef(modelRef), { ...opts, revision: optionalRevision(opts.revision) });
}

/** The catalog entry of a model: cached, or once its download (joined or new) completes, as a spawn waits for it. */
async function ensure(modelRef: string, opts: { revision?: string } = {}) {
  const r = await start(modelRef, opts);
  return r.cached ? r.entry : tracker.whenDone(r.job.id);
}

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "rbee-tracker-"));
  hub = await FakeHub.start({ chunkBytes: 32 * 1024 });
  sha = hub.addRepo({ id: "org/m-GGUF", files: [{ path: "m.Q4_K_M.gguf", size: SIZE, seed: 7 }] }).files["m.Q4_K_M.gguf"]!.sha256;
  hub.addRepo({ id: "org/other-GGUF", files: [{ path: "o.Q4_K_M.gguf", size: SIZE, seed: 8 }] });
  catalog = new ModelCatalog({ path: join(dir, "catalog.db") });
  make();
});
afterEach(async () => {
  await tracker.stopAll();
  catalog.close();
  await hub.stop();
  rmSync(dir, { recursive: true, force: true });
});

async function waitFor(cond: () => boolean, ms = 5000): Promise<void> {
  const t0 = performance.now();
  while (!cond()) {
    if (performance.now() - t0 > ms) throw new Error("timed out waiting");
    await Bun.sleep(5);
  }
}


/** Hold each of the 4 parts after `at` bytes for `ms`. */
function stallParts(at: number, ms: number) {
  for (let i = 0; i < 4; i++) hub.addFault({ kind: "stall", atByte: i * PART + at, ms, path: "m.Q4_K_M.gguf" });
}

describe("jobs", () => {
  test("two concurrent downloads of one model share one transfer", async () => {
    const [a, b] = await Promise.all([start(REF), start(REF)]);
    expect(a.cached).toBe(false);
    expect(b.cached).toBe(false);
    if (a.cached || b.cached) throw new Error("unreachable");
    expect(a.joined).toBe(false);
    expect(b.joined).toBe(true);
    expect(b.job.id).toBe(a.job.id);
    const viaEnsure = ensure(REF); // spawn of a model being downloaded joins too
    const [e1, e2, e3] = await Promise.all([tracker.whenDone(a.job.id), tracker.whenDone(b.job.id), viaEnsure]);
    expect(e1.local_path).toBe(e2.local_path);
    expect(e3.local_path).toBe(e1.local_path);
    expect(hub.bytesServed((e) => e.content)).toBe(SIZE);
    expect(hub.contentRequests()).toHaveLength(4); // 4 parts, once
    expect(tracker.list()).toHaveLength(1);
  });

  test("progress: upstream shapes, increasing ids, throttled, complete only after registration", async () => {
    stallParts(50_000, 150);
    const events: TrackedEvent[] = [];
    let catalogHadItAtComplete = false;
    const r = await start(REF);
    if (r.cached) throw new Error("unexpected cache hit");
    const t0 = performance.now();
    tracker.subscribe(r.job.id, undefined, (ev) => {
      events.push(ev);
      if (ev.data.stage === "complete") catalogHadItAtComplete = catalog.get(REF) !== null;
    });
    const entry = await tracker.whenDone(r.job.id);
    const took = performance.now() - t0;
    expect(catalogHadItAtComplete).toBe(true);
    expect(events.map((e) => e.id)).toEqual(events.map((_, i) => events[0]!.id + i));
    const last = events[events.length - 1]!;
    expect(last.data).toEqual({ stage: "complete", local_path: entry.local_path });
    const progress = events.filter((e) => e.data.stage === "downloading").map((e) => e.data as Record<string, unknown>);
    expect(progress.length).toBeGreaterThanOrEqual(2);
    for (const p of progress) {
      expect(typeof p.bytes_downloaded).toBe("number");
      expect(typeof p.bytes_total).toBe("number");
      expect(typeof p.speed_mbps).toBe("number");
    }
    const final = progress[progress.length - 1]!;
    expect(final).toMatchObject({ bytes_downloaded: SIZE, bytes_total: SIZE, files_done: 1, files_total: 1, file: "m.Q4_K_M.gguf" });
    expect(progress.some((p) => (p.speed_mbps as number) > 0)).toBe(true);
    // throttled: far fewer events than the ~31 chunks, and at most one per 20 ms (+ first/last)
    expect(progress.length).toBeLessThanOrEqual(Math.ceil(took / 20) + 3);
    const bytes = progress.map((p) => p.bytes_downloaded as number);
    expect([...bytes].sort((x, y) => x - y)).toEqual(bytes);
    expect(tracker.get(r.job.id)).toMatchObject({ state: "complete", bytes_downloaded: SIZE, local_path: entry.local_path });
  });

  test("a late subscriber gets the terminal event; Last-Event-ID replays what was missed", async () => {
    const r = await start(REF);
    if (r.cached) throw new Error("unexpected cache hit");
    await tracker.whenDone(r.job.id);
    const late: TrackedEvent[] = [];
    const unsub = tracker.subscribe(r.job.id, undefined, (e) => late.push(e));
    expect(late).toHaveLength(1);
    expect(late[0]!.data.stage).toBe("complete");
    const lastId = tracker.get(r.job.id)!.last_event_id;
    expect(late[0]!.id).toBe(lastId);
    unsub();
    const replay: TrackedEvent[] = [];
    tracker.subscribe(r.job.id, lastId - 2, (e) => replay.push(e));
    expect(replay.map((e) => e.id)).toEqual([lastId - 1, lastId]);
    const none: TrackedEvent[] = [];
    tracker.subscribe(r.job.id, lastId, (e) => none.push(e));
    expect(none).toHaveLength(0);
  });

  test("finished jobs stay answerable for the TTL (injected clock), then 404", async () => {
    let now = 1_000_000;
    const clock: Clock = { ...systemClock, now: () => now };
    make({ clock, finishedJobTtlMs: 60_000 });
    const r = await start(REF);
    if (r.cached) throw new Error("unexpected cache hit");
    await tracker.whenDone(r.job.id);
    now += 59_999;
    expect(tracker.get(r.job.id)?.state).toBe("complete");
    now += 1;
    expect(tracker.get(r.job.id)).toBeUndefined();
    expect(tracker.list()).toHaveLength(0);
    expect(() => tracker.subscribe(r.job.id, undefined, () => {})).toThrow(HiveError);
    const e = await rejection(tracker.whenDone(r.job.id));
    expect(e).toMatchObject({ status: 404, code: "DOWNLOAD_NOT_FOUND" });
  });

  test("an unsubscribed listener hears nothing more", async () => {
    stallParts(50_000, 100);
    const r = await start(REF);
    if (r.cached) throw new Error("unexpected cache hit");
    const heard: TrackedEvent[] = [];
    const unsub = tracker.subscribe(r.job.id, undefined, (e) => heard.push(e));
    const count = heard.length;
    unsub();
    await tracker.whenDone(r.job.id);
    expect(heard).toHaveLength(count);
  });
});

describe("cache, cancel, resume", () => {
  test("a model in the catalog is answered as cached; lost files trigger a new download", async () => {
    const first = await ensure(REF);
    const r = await start(REF);
    expect(r).toMatchObject({ cached: true, local_path: first.local_path });
    expect(hub.contentRequests()).toHaveLength(4);
    // the blob vanished behind our back: not cached any more
    unlinkSync(first.files[0]!.blob_path!);
    const again = await start(REF);
    expect(again.cached).toBe(false);
    if (again.cached) throw new Error("unreachable");
    await tracker.whenDone(again.job.id);
    expect(hub.bytesServed((e) => e.content)).toBe(2 * SIZE);
  });

  test("cancel keeps partial files; the next start resumes them; purge removes them", async () => {
    stallParts(100_000, 60_000);
    const r = await start(REF);
    if (r.cached) throw new Error("unexpected cache hit");
    const events: TrackedEvent[] = [];
    tracker.subscribe(r.job.id, undefined, (e) => events.push(e));
    await waitFor(() => (tracker.get(r.job.id)?.bytes_downloaded ?? 0) >= 400_000);
    const info = await tracker.cancel(r.job.id);
    expect(info.state).toBe("cancelled");
    expect(events[events.length - 1]!.data).toMatchObject({ stage: "error", code: "DOWNLOAD_CANCELLED" });
    expect((await rejection(tracker.whenDone(r.job.id))).code).toBe("DOWNLOAD_CANCELLED");
    const blobs = join(dir, "models", "models--org--m-GGUF", "blobs");
    expect(readdirSync(blobs).sort()).toEqual([`${sha}.rbee-partial`, `${sha}.rbee-partial.json`]);
    expect(catalog.get(REF)).toBeNull();

    const again = await start(REF);
    if (again.cached) throw new Error("unexpected cache hit");
    expect(again.joined).toBe(false);
    expect(again.job.id).not.toBe(r.job.id);
    await tracker.whenDone(again.job.id);
    // bytes not fetched twice beyond one part
    expect(hub.bytesServed((e) => e.content)).toBeLessThanOrEqual(SIZE + PART);
    expect(hub.bytesServed((e) => e.content)).toBe(SIZE);

    // purge: another model, cancelled with purge → no partial left
    hub.addFault({ kind: "stall", atByte: 100_000, ms: 60_000, path: "o.Q4_K_M.gguf" });
    const o = await start("hf:org/other-GGUF");
    if (o.cached) throw new Error("unexpected cache hit");
    await waitFor(() => (tracker.get(o.job.id)?.bytes_downloaded ?? 0) >= 100_000);
    await tracker.cancel(o.job.id, { purge: true });
    const oblobs = join(dir, "models", "models--org--other-GGUF", "blobs");
    expect(readdirSync(oblobs).filter((f) => f.includes("partial"))).toEqual([]);
  });

  test("stopAll interrupts running jobs and keeps their partial files", async () => {
    stallParts(100_000, 60_000);
    const r = await start(REF);
    if (r.cached) throw new Error("unexpected cache hit");
    await waitFor(() => (tracker.get(r.job.id)?.bytes_downloaded ?? 0) >= 400_000);
    await tracker.stopAll();
    expect(tracker.get(r.job.id)).toMatchObject({ state: "error", error: { code: "HIVE_SHUTTING_DOWN" } });
    expect(existsSync(join(dir, "models", "models--org--m-GGUF", "blobs", `${sha}.rbee-partial`))).toBe(true);
  });
});

describe("errors and file: refs", () => {
  test("hub errors become error events with a code, and reject whenDone", async () => {
    const r = await start("hf:nobody/nothing");
    if (r.cached) throw new Error("unexpected cache hit");
    const e = await rejection(tracker.whenDone(r.job.id));
    expect(e).toMatchObject({ status: 404, code: "MODEL_NOT_FOUND" });
    const events: TrackedEvent[] = [];
    tracker.subscribe(r.job.id, undefined, (ev) => events.push(ev));
    expect(events).toHaveLength(1);
    expect(events[0]!.data).toMatchObject({ stage: "error", code: "MODEL_NOT_FOUND" });
    expect((events[0]!.data as { message: string }).message).toBe(
      `repository nobody/nothing not found on ${hub.url} (if it is private, set HF_TOKEN to a token of an account that has access)`,
    );
    expect(tracker.get(r.job.id)).toMatchObject({ state: "error", error: { code: "MODEL_NOT_FOUND" } });
  });

  test("awaitPlan turns plan errors into thrown errors (ambiguous choice, gated)", async () => {
    hub.addRepo({ id: "org/amb-GGUF", files: [{ path: "a.Q4_K_M.gguf", size: 10 }, { path: "b.Q4_K_M.gguf", size: 10 }] });
    const amb = await rejection(start("hf:org/amb-GGUF", { awaitPlan: true }));
    expect(amb).toMatchObject({ status: 400, code: "AMBIGUOUS_MODEL_FILES" });
    expect(amb.details!.candidates).toEqual(["a.Q4_K_M.gguf", "b.Q4_K_M.gguf"]);
    hub.addRepo({ id: "org/gated-GGUF", gated: { token: "t" }, files: [{ path: "g.gguf", size: 10 }] });
    expect(await rejection(start("hf:org/gated-GGUF", { awaitPlan: true }))).toMatchObject({ status: 403, code: "MODEL_GATED" });
  });

  test("invalid refs are refused before any job exists", async () => {
    expect(await rejection(start("hf:org"))).toMatchObject({
      status: 400,
      code: "INVALID_INPUT",
      message: 'model_ref "hf:org": expected "hf:<org>/<repo>", "hf:<org>/<repo>:<QUANT>" or "hf:<org>/<repo>/<file>"',
      details: { field: "model_ref" },
    });
    expect(await rejection(start(REF, { revision: "../x" }))).toMatchObject({
      status: 400,
      code: "INVALID_INPUT",
      message: `revision "../x" has an empty, '.' or '..' segment`,
      details: { field: "revision" },
    });
    expect(tracker.list()).toHaveLength(0);
  });

  test("file: refs under the models dir are registered at once", async () => {
    mkdirSync(join(dir, "models"), { recursive: true });
    writeFileSync(join(dir, "models", "local.Q4_0.gguf"), "gguf!");
    const r = await start(`file:${join(dir, "models", "local.Q4_0.gguf")}`);
    expect(r).toMatchObject({ cached: true, local_path: join(dir, "models", "local.Q4_0.gguf") });
    expect(catalog.get(`file:${join(dir, "models", "local.Q4_0.gguf")}`)).toMatchObject({ size_bytes: 5, format: "gguf", quantization: "Q4_0" });
    expect(await rejection(start("file:/etc/passwd"))).toMatchObject({
      status: 400,
      code: "INVALID_INPUT",
      message: `model_ref "/etc/passwd" is outside the allowed model roots (${join(dir, "models")})`,
      details: { field: "model_ref", roots: [join(dir, "models")] },
    });
  });

  test("a revision is part of the job key and of the catalog key", async () => {
    hub.addRepo({
      id: "org/rev-GGUF",
      files: [{ path: "r.Q4_K_M.gguf", size: 2000, seed: 1 }],
      commits: [{ commit: "1".repeat(40), refs: ["v1"], files: [{ path: "r.Q4_K_M.gguf", size: 1000, seed: 2 }] }],
    });
    const [main, v1] = await Promise.all([ensure("hf:org/rev-GGUF"), ensure("hf:org/rev-GGUF", { revision: "v1" })]);
    expect(main.size_bytes).toBe(2000);
    expect(v1.size_bytes).toBe(1000);
    expect(v1.commit).toBe("1".repeat(40));
    expect(catalog.get("hf:org/rev-GGUF", "v1")!.size_bytes).toBe(1000);
    expect(catalog.get("hf:org/rev-GGUF")!.size_bytes).toBe(2000);
  });
});

describe("the model's description at registration (describe: catalogMetadata, as the daemon wires it)", () => {
  test("a downloaded GGUF model's header is kept in the catalog metadata", async () => {
    make({ describe: catalogMetadata });
    hub.addRepo({ id: "org/real-GGUF", files: [{ path: "real.Q4_K_M.gguf", size: 8000, seed: 4, gguf: true }] });
    const entry = await ensure("hf:org/real-GGUF");
    expect(entry.metadata).toMatchObject({ repo: "org/real-GGUF", selected_by: "default" });
    expect(entry.metadata.gguf).toEqual({
      version: 3, architecture: "llama", name: "tiny-llama-test", context_length: 2048, block_count: 4, embedding_length: 256,
      head_count: 8, head_count_kv: 2, key_length: null, value_length: null, file_type: 15, file_type_name: "Q4_K_M",
      tensor_count: 1, tensor_data_bytes: 8000 - (MIN_GGUF_BYTES - 32), parameter_count: 8, shards: 1,
    });
  });

  test("a download that is not valid GGUF ends in INVALID_GGUF and never enters the catalog", async () => {
    make({ describe: catalogMetadata });
    const r = await start(REF);
    if (r.cached) throw new Error("unexpected cache hit");
    const e = await rejection(tracker.whenDone(r.job.id));
    expect(e).toMatchObject({ status: 400, code: "INVALID_GGUF", message: expect.stringMatching(/^\/.*\/m\.Q4_K_M\.gguf is not a valid GGUF file: it does not start with the GGUF magic number$/) });
    expect(catalog.get(REF)).toBeNull();
  });

  test("a file: model that is not valid GGUF is refused at registration", async () => {
    make({ describe: catalogMetadata });
    mkdirSync(join(dir, "models"), { recursive: true });
    const path = join(dir, "models", "local.Q4_0.gguf");
    writeFileSync(path, "gguf!");
    expect(await rejection(start(`file:${path}`))).toMatchObject({ status: 400, code: "INVALID_GGUF", message: `${path} is not a valid GGUF file: 5 bytes is too short for a GGUF header (truncated?)` });
    expect(catalog.get(`file:${path}`)).toBeNull();
  });
});
