/**
 * The SQLite catalog when things go wrong: a damaged models.db is moved aside at start-up and the
 * catalog rebuilt from the models dir; a full disk on a write is 507 INSUFFICIENT_DISK; other
 * SQLite failures are 503 CATALOG_UNAVAILABLE; /v1/health says whether the catalog is degraded.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readdirSync, statSync, symlinkSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { startHive, type Hive } from "../src/hive.ts";
import { ModelCatalog } from "../src/models/model-catalog/catalog.ts";
import { rebuildCatalogFromCache } from "../src/models/provisioner/rebuild-catalog.ts";
import { FAKE_WORKER, memoryLogger, tempDir, testConfig, waitFor } from "./helpers.ts";
import { FakeHub } from "./fixtures/fake-hub.ts";
import { tinyLlamaSpec, writeGguf } from "./fixtures/gguf-writer.ts";

const SIZE = 300_000;
const cleanups: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Started extends Hive {
  logs: string[];
  api(path: string, init?: RequestInit & { json?: unknown }): Promise<Response>;
  stop(): Promise<void>;
}

/** An in-process hive on a data dir the test owns (so a second hive can start on the same files). */
async function start(dataDir: string, env: Record<string, string> = {}): Promise<Started> {
  const loaded = testConfig(
    dataDir,
    {
      workers: { binary: FAKE_WORKER, silent: true, stop_grace_s: 2, port_min: 20000 + Math.floor(Math.random() * 20000), port_max: 65000 },
      monitor: { interval_s: 3600 },
      restart: { enabled: false },
      shutdown: { worker_grace_s: 1, total_timeout_s: 5 },
      downloads: { part_size_mb: 0.25, parallel_parts: 1, disk_margin_mb: 0, progress_interval_s: 0.01, max_retries: 1 },
      resources: { overhead_mb: 0, ram_reserve_mb: 0 },
    },
    env,
  );
  const logger = memoryLogger();
  // No detection tools on this PATH: never the host's real nvidia-smi.
  const hive = await startHive(loaded, logger, { echo: null, resources: { inventory: { env: { PATH: join(dataDir, "no-tools") } } } });
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await hive.shutdown.run("test done");
  };
  cleanups.push(stop);
  return Object.assign(hive, {
    logs: logger.lines,
    stop,
    api: (path: string, init: RequestInit & { json?: unknown } = {}) =>
      fetch(hive.url + path, {
        ...init,
        method: init.method ?? (init.json !== undefined ? "POST" : "GET"),
        headers: init.json !== undefined ? { "content-type": "application/json" } : undefined,
        body: init.json !== undefined ? JSON.stringify(init.json) : init.body,
      }),
  });
}

function temp(): string {
  const d = tempDir("rbee-catalog-");
  cleanups.push(d.cleanup);
  return d.path;
}

async function hub(): Promise<FakeHub> {
  const h = await FakeHub.start({ chunkBytes: 16 * 1024, ggufHeaders: true });
  cleanups.push(() => h.stop());
  h.addRepo({
    id: "org/tiny-GGUF",
    files: [
      { path: "tiny.Q4_K_M.gguf", size: SIZE, seed: 1 },
      { path: "tiny.Q8_0.gguf", size: SIZE, seed: 2 },
      { path: "README.md", content: "# tiny" },
    ],
  });
  return h;
}

async function download(h: Started, modelRef: string): Promise<any> {
  const res = await h.api("/v1/models/download", { json: { model_ref: modelRef } });
  expect(res.status).toBe(200);
  const answer: any = await res.json();
  if (answer.download_id === "cached") return answer;
  return waitFor(
    async () => {
      const { downloads }: any = await (await h.api("/v1/models/downloads")).json();
      const job = downloads.find((d: any) => d.id === answer.download_id);
      return job && job.state !== "planning" && job.state !== "downloading" ? job : undefined;
    },
    { what: `download of ${modelRef}` },
  );
}

const health = async (h: Started) => (await h.api("/v1/health")).json() as Promise<any>;

describe("a damaged models.db at start-up", () => {
  test("garbage in the middle: moved aside, rebuilt from the models dir, the hive works", async () => {
    const fake = await hub();
    const data = temp();
    const env = { HF_ENDPOINT: fake.url };
    const first = await start(data, env);
    expect((await download(first, "hf:org/tiny-GGUF")).state).toBe("complete");
    expect((await download(first, "hf:org/tiny-GGUF:Q8_0")).state).toBe("complete");
    const local = join(data, "models", "local.gguf");
    writeGguf(local, tinyLlamaSpec());
    expect((await download(first, `file:${local}`)).download_id).toBe("cached");
    await first.stop();

    // Garbage in the middle of the real file the catalog wrote (WAL checkpointed on close).
    const dbPath = join(data, "models.db");
    const size = statSync(dbPath).size;
    expect(size).toBeGreaterThanOrEqual(4 * 4096);
    const fd = openSync(dbPath, "r+");
    writeSync(fd, Buffer.alloc(4096, 0x41), 0, 4096, Math.floor(size / 8192) * 4096);
    closeSync(fd);
    const probePath = join(temp(), "probe.db"); // a copy: opening it leaves -wal/-shm files behind
    copyFileSync(dbPath, probePath);
    const probe = new Database(probePath, { readonly: true });
    let precondition: unknown;
    try {
      precondition = (probe.query("PRAGMA quick_check").get() as any).quick_check;
    } catch (e) {
      precondition = (e as Error).message;
    } finally {
      probe.close();
    }
    expect(precondition).not.toBe("ok"); // the damage is real

    const before = Date.now();
    const second = await start(data, env);
    const moved = readdirSync(data).filter((n) => n.startsWith("models.db.corrupt-"));
    expect(moved).toHaveLength(1);
    const ms = Number(moved[0]!.slice("models.db.corrupt-".length));
    expect(ms).toBeGreaterThanOrEqual(before);
    expect(ms).toBeLessThanOrEqual(Date.now());
    expect(statSync(join(data, moved[0]!)).size).toBe(size);
    const warning = second.logs.map((l) => JSON.parse(l)).filter((l) => l.level === "warn" && String(l.msg).startsWith("model catalog"));
    expect(warning).toEqual([
      expect.objectContaining({
        msg: `model catalog ${dbPath} is damaged; moved it to ${join(data, moved[0]!)} and rebuilt the catalog from ${join(data, "models")}`,
        rebuilt: ["hf:org/tiny-GGUF/tiny.Q4_K_M.gguf", "hf:org/tiny-GGUF/tiny.Q8_0.gguf"],
      }),
    ]);

    // Every complete GGUF model of the cache is back, under its exact-file ref.
    const { models }: any = await (await second.api("/v1/models")).json();
    expect(models.map((m: any) => [m.model_ref, m.revision, m.size_bytes, m.quantization, m.format])).toEqual([
      ["hf:org/tiny-GGUF/tiny.Q4_K_M.gguf", "main", SIZE, "Q4_K_M", "gguf"],
      ["hf:org/tiny-GGUF/tiny.Q8_0.gguf", "main", SIZE, "Q8_0", "gguf"],
    ]);
    expect(models[0].files[0].sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(await health(second)).toMatchObject({ status: "alive", api_version: "v1", catalog: "ok" });

    // The other refs return on request, from the blobs already on disk.
    fake.clearLog();
    const again = await download(second, "hf:org/tiny-GGUF");
    expect(again).toMatchObject({ state: "complete", bytes_downloaded: SIZE });
    expect(fake.bytesServed()).toBe(0);
    const spawn = await second.api("/v1/workers/spawn", { json: { model_ref: `file:${local}`, backend: "cpu", device: 0 } });
    expect(spawn.status).toBe(200);

    // A clean restart keeps the new catalog and moves nothing.
    await second.stop();
    const third = await start(data, env);
    expect(readdirSync(data).filter((n) => n.startsWith("models.db.corrupt-"))).toHaveLength(1);
    expect(third.logs.some((l) => l.includes("is damaged"))).toBe(false);
  });

  test("a file that is not a database at all is moved aside with its -wal and -shm", async () => {
    const data = temp();
    writeFileSync(join(data, "models.db"), "this is not a database ".repeat(300));
    writeFileSync(join(data, "models.db-wal"), "junk wal");
    writeFileSync(join(data, "models.db-shm"), "junk shm");
    const h = await start(data);
    const names = readdirSync(data).sort();
    const moved = names.find((n) => /^models\.db\.corrupt-\d+$/.test(n))!;
    expect(names.filter((n) => n.startsWith("models.db.corrupt-"))).toEqual([moved, `${moved}-shm`, `${moved}-wal`]);
    expect((await (await h.api("/v1/models")).json()) as any).toEqual({ models: [] });
    expect(await health(h)).toMatchObject({ catalog: "ok" });
  });
});

describe("rebuilding from the HF cache layout", () => {
  test("complete GGUF models at every revision naming their snapshot; incomplete split sets and other files are left out", () => {
    const models = join(temp(), "models");
    const repo = join(models, "models--org--x-GGUF");
    const [c1, c2] = ["1".repeat(40), "2".repeat(40)];
    const blob = (n: number, content: string) => {
      const etag = String(n).repeat(64);
      mkdirSync(join(repo, "blobs"), { recursive: true });
      writeFileSync(join(repo, "blobs", etag), content);
      return etag;
    };
    const link = (commit: string, path: string, etag: string) => {
      mkdirSync(join(repo, "snapshots", commit), { recursive: true });
      symlinkSync(`../../blobs/${etag}`, join(repo, "snapshots", commit, path));
    };
    link(c1, "x.Q4_K_M.gguf", blob(3, "q4km"));
    link(c1, "big-00001-of-00002.gguf", blob(4, "shard1")); // shard 2 missing
    link(c1, "README.md", "a".repeat(40)); // git blob not in the cache
    link(c2, "x.Q8_0.gguf", blob(5, "q8_0!"));
    mkdirSync(join(repo, "refs", "tags"), { recursive: true });
    writeFileSync(join(repo, "refs", "main"), c1);
    writeFileSync(join(repo, "refs", "tags", "v1"), c1);
    // c2 has no ref: it was asked for by commit.
    const catalog = new ModelCatalog();
    try {
      expect(rebuildCatalogFromCache(catalog, models)).toEqual([
        "hf:org/x-GGUF/x.Q4_K_M.gguf",
        `hf:org/x-GGUF/x.Q4_K_M.gguf@tags/v1`,
        `hf:org/x-GGUF/x.Q8_0.gguf@${c2}`,
      ]);
      expect(catalog.get("hf:org/x-GGUF/x.Q4_K_M.gguf", "tags/v1")).toMatchObject({
        commit: c1,
        size_bytes: 4,
        local_path: join(repo, "snapshots", c1, "x.Q4_K_M.gguf"),
        files: [{ path: "x.Q4_K_M.gguf", sha256: "3".repeat(64), git_oid: null, blob_path: join(repo, "blobs", "3".repeat(64)), size_bytes: 4 }],
      });
      expect(catalog.get("hf:org/x-GGUF/x.Q8_0.gguf", c2)).toMatchObject({ commit: c2, quantization: "Q8_0", size_bytes: 5 });
    } finally {
      catalog.close();
    }
  });
});

describe("catalog failures at runtime", () => {
  test("a full disk on a write is 507 INSUFFICIENT_DISK and health says degraded until a write succeeds", async () => {
    const data = temp();
    const h = await start(data);
    const dir = join(data, "models", "many");
    mkdirSync(dir, { recursive: true });
    for (let i = 0; i < 200; i++) writeFileSync(join(dir, `shard-with-a-long-descriptive-name-${i}.bin`), "x");
    const pages = (h.catalog.db.query("PRAGMA page_count").get() as any).page_count;
    h.catalog.db.run(`PRAGMA max_page_count = ${pages}`);

    const res = await h.api("/v1/models/download", { json: { model_ref: `file:${dir}` } });
    expect(res.status).toBe(507);
    expect(await res.json()).toEqual({
      error: {
        code: "INSUFFICIENT_DISK",
        message: `the model catalog ${join(data, "models.db")} cannot be written: the disk is full (SQLITE_FULL); free some space and retry`,
      },
    });
    const spawn = await h.api("/v1/workers/spawn", { json: { model_ref: `file:${dir}`, backend: "cpu", device: 0 } });
    expect(spawn.status).toBe(507);
    expect(await health(h)).toEqual({
      status: "alive",
      version: expect.any(String),
      api_version: "v1",
      catalog: "degraded",
      catalog_reason: "write failed: the disk is full (SQLITE_FULL)",
    });
    // Reads still work while writes fail.
    expect((await h.api("/v1/models")).status).toBe(200);
    expect((await health(h)).catalog).toBe("degraded");

    h.catalog.db.run("PRAGMA max_page_count = 1073741823");
    expect((await h.api("/v1/models/download", { json: { model_ref: `file:${dir}` } })).status).toBe(200);
    const healed = await health(h);
    expect(healed).toMatchObject({ status: "alive", catalog: "ok" });
    expect(healed.catalog_reason).toBeUndefined();
  });

  test("another SQLite failure is 503 CATALOG_UNAVAILABLE, never a bare 500", async () => {
    const data = temp();
    const h = await start(data);
    h.catalog.db.run("DROP TABLE model_files");
    const res = await h.api("/v1/models");
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({
      error: {
        code: "CATALOG_UNAVAILABLE",
        message: `the model catalog ${join(data, "models.db")} cannot be read (SQLITE_ERROR); see the hive log, GET /v1/health shows its state`,
      },
    });
    expect(await health(h)).toMatchObject({ catalog: "degraded", catalog_reason: "read failed (SQLITE_ERROR)" });
    expect(h.logs.map((l) => JSON.parse(l)).some((l) => l.level === "error" && l.msg === "model catalog read failed" && /no such table: model_files/.test(l.err))).toBe(true);
    expect(existsSync(join(data, "models.db"))).toBe(true);
  });
});
