/**
 * Provisioner robustness against the fake hub's injected faults: dropped connections, corruption,
 * stalls, 429/5xx, disk space, and reuse of an existing Hugging Face cache without network.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Provisioner, type ProvisionerOptions } from "../src/models/provisioner/index.ts";
import { parseRetryAfter } from "../src/models/provisioner/retry.ts";
import { HiveError } from "../src/shared/errors.ts";
import { FakeHub, deterministicBytes } from "./fixtures/fake-hub.ts";
import { hfRef, modelDefaults, rejection } from "./helpers.ts";

const PART = 256 * 1024;
const SIZE = 1_000_000; // 4 parts
const REPO = "org/m-GGUF";
const FILE = "m.Q4_K_M.gguf";

let dir: string;
let hub: FakeHub;
let sha: string;
let commit: string;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "rbee-faults-"));
  hub = await FakeHub.start({ chunkBytes: 64 * 1024 });
  const r = hub.addRepo({ id: REPO, files: [{ path: FILE, size: SIZE, seed: 7 }, { path: "README.md", content: "x" }] });
  sha = r.files[FILE]!.sha256;
  commit = r.commit;
});
afterEach(async () => {
  await hub.stop();
  rmSync(dir, { recursive: true, force: true });
});

function prov(extra: Partial<ProvisionerOptions> = {}): Provisioner {
  return new Provisioner({
    ...modelDefaults().provisioner,
    modelsDir: join(dir, "models"),
    endpoint: hub.url,
    partSizeBytes: PART,
    maxParallelParts: 4,
    initialParallelParts: 4, // the per-part behaviours below; "streams" covers the default of 1
    retryBaseMs: 5,
    retryMaxMs: 50,
    stallTimeoutMs: 2000,
    diskMarginBytes: 0,
    ...extra,
  });
}


const blobsDir = () => join(dir, "models", "models--org--m-GGUF", "blobs");
const content = () => hub.contentRequests();
const servedBytes = () => hub.bytesServed((e) => e.content);

describe("resume", () => {
  test("a dropped connection resumes at the byte where it stopped", async () => {
    hub.addFault({ kind: "drop", atByte: 600_000 });
    const r = await prov().download(`hf:${REPO}`);
    expect(r.stats.retries).toBe(1);
    expect(new Uint8Array(readFileSync(r.local_path))).toEqual(deterministicBytes(SIZE, 7));
    // nothing fetched twice: the retry asked for exactly the missing tail of that part
    expect(content().some((e) => e.range === `bytes=600000-${3 * PART - 1}`)).toBe(true);
    expect(servedBytes()).toBeLessThanOrEqual(SIZE + PART);
    expect(servedBytes()).toBe(SIZE);
  });

  test("after an interrupted run (new process), each part resumes from its saved state", async () => {
    // Hold every part in the middle, then abort the run as a crash would cut it.
    for (let i = 0; i < 4; i++) hub.addFault({ kind: "stall", atByte: i * PART + 100_000, ms: 60_000 });
    const ac = new AbortController();
    const first = prov().download(`hf:${REPO}`, {
      signal: ac.signal,
      onProgress: (p) => {
        if (p.bytes_downloaded >= 400_000) ac.abort();
      },
    });
    await expect(first).rejects.toThrow();
    const partials = readdirSync(blobsDir()).sort();
    expect(partials).toEqual([`${sha}.rbee-partial`, `${sha}.rbee-partial.json`]);
    const state = JSON.parse(readFileSync(join(blobsDir(), `${sha}.rbee-partial.json`), "utf8"));
    expect(state.parts.map((p: { done: number }) => p.done)).toEqual([100_000, 100_000, 100_000, 100_000]);

    hub.clearLog();
    const r = await prov().download(`hf:${REPO}`);
    expect(r.stats.bytes_resumed).toBe(400_000);
    expect(r.stats.bytes_transferred).toBe(SIZE - 400_000);
    expect(content().map((e) => e.range).sort()).toEqual([
      `bytes=100000-${PART - 1}`,
      `bytes=${PART + 100_000}-${2 * PART - 1}`,
      `bytes=${2 * PART + 100_000}-${3 * PART - 1}`,
      `bytes=${3 * PART + 100_000}-${SIZE - 1}`,
    ]);
    expect(servedBytes()).toBe(SIZE - 400_000);
    expect(new Uint8Array(readFileSync(r.local_path))).toEqual(deterministicBytes(SIZE, 7));
    expect(readdirSync(blobsDir())).toEqual([sha]);
  });

  test("purgePartials removes what a cancelled run left", async () => {
    hub.addFault({ kind: "stall", atByte: 100_000, ms: 60_000 });
    const p = prov({ maxParallelParts: 1 });
    const plan = await p.plan(hfRef(`hf:${REPO}`));
    const ac = new AbortController();
    const run = p.provision(plan, { signal: ac.signal, onProgress: (x) => x.bytes_downloaded >= 100_000 && ac.abort() });
    await expect(run).rejects.toThrow();
    expect(existsSync(join(blobsDir(), `${sha}.rbee-partial`))).toBe(true);
    p.purgePartials(plan);
    expect(readdirSync(blobsDir())).toEqual([]);
  });
});

describe("streams", () => {
  test("by default one connection reads the whole file in order; a drop resumes from that byte to the end", async () => {
    hub.addFault({ kind: "drop", atByte: 600_000 });
    const r = await prov({ initialParallelParts: 1 }).download(`hf:${REPO}`);
    expect(content().map((e) => e.range)).toEqual([`bytes=0-${SIZE - 1}`, `bytes=600000-${SIZE - 1}`]);
    expect(r.stats.retries).toBe(1);
    expect(servedBytes()).toBe(SIZE);
    expect(new Uint8Array(readFileSync(r.local_path))).toEqual(deterministicBytes(SIZE, 7));
  });

  test("an interrupted stream leaves per-part state; the next run asks for exactly what is missing", async () => {
    hub.addFault({ kind: "stall", atByte: 400_000, ms: 60_000 });
    const ac = new AbortController();
    const first = prov({ initialParallelParts: 1 }).download(`hf:${REPO}`, {
      signal: ac.signal,
      onProgress: (p) => p.bytes_downloaded >= 400_000 && ac.abort(),
    });
    await expect(first).rejects.toThrow();
    const state = JSON.parse(readFileSync(join(blobsDir(), `${sha}.rbee-partial.json`), "utf8"));
    expect(state.parts.map((p: { done: number }) => p.done)).toEqual([PART, 400_000 - PART, 0, 0]);

    hub.clearLog();
    const r = await prov({ initialParallelParts: 1 }).download(`hf:${REPO}`);
    expect(r.stats.bytes_resumed).toBe(400_000);
    expect(content().map((e) => e.range)).toEqual([`bytes=400000-${SIZE - 1}`]);
    expect(servedBytes()).toBe(SIZE - 400_000);
    expect(new Uint8Array(readFileSync(r.local_path))).toEqual(deterministicBytes(SIZE, 7));
  });

  test("while the rate per connection is low, connections are added for the parts ahead", async () => {
    hub.addFault({ kind: "stall", atByte: 100_000, ms: 300 });
    const r = await prov({ initialParallelParts: 1, parallelProbeMs: 20, addPartBelowBytesPerSec: 1e12 }).download(`hf:${REPO}`);
    const ranges = content().map((e) => e.range);
    expect(ranges[0]).toBe(`bytes=0-${SIZE - 1}`);
    // the second connection starts in the middle of what the first one had ahead of it
    expect(ranges[1]).toBe(`bytes=${2 * PART}-${SIZE - 1}`);
    expect(ranges).toContain(`bytes=${PART}-${2 * PART - 1}`);
    expect(r.stats.bytes_transferred).toBe(SIZE); // no byte written twice
    expect(r.stats.retries).toBe(0);
    expect(new Uint8Array(readFileSync(r.local_path))).toEqual(deterministicBytes(SIZE, 7));
  });
});

describe("verification", () => {
  test("a corrupted byte is detected, retried once, and never registered", async () => {
    hub.addFault({ kind: "corrupt", atByte: 777_777, times: 100 });
    const e = await rejection(prov().download(`hf:${REPO}`));
    expect(e.status).toBe(502);
    expect(e.code).toBe("CHECKSUM_MISMATCH");
    expect(e.details!.expected).toBe(sha);
    expect(readdirSync(blobsDir())).toEqual([]); // no blob, no partial
    expect(existsSync(join(dir, "models", "models--org--m-GGUF", "snapshots", commit, FILE))).toBe(false);
    expect(hub.contentRequests((x) => !!x.fault?.includes("corrupt"))).toHaveLength(2);
  });

  test("a one-off corruption heals with one full re-download", async () => {
    hub.addFault({ kind: "corrupt", atByte: 5 });
    const r = await prov().download(`hf:${REPO}`);
    expect(new Uint8Array(readFileSync(r.local_path))).toEqual(deterministicBytes(SIZE, 7));
    expect(servedBytes()).toBe(2 * SIZE);
  });
});

describe("retries", () => {
  test("a stalled part is aborted and retried from where it stopped", async () => {
    // Held for 10 minutes: only the stall detector (150 ms) can finish this within the test timeout.
    hub.addFault({ kind: "stall", atByte: 300_000, ms: 600_000 });
    const r = await prov({ stallTimeoutMs: 150 }).download(`hf:${REPO}`);
    expect(r.stats.stalls).toBe(1);
    expect(r.stats.retries).toBe(1);
    expect(content().some((e) => e.range === `bytes=300000-${2 * PART - 1}`)).toBe(true);
    expect(servedBytes()).toBe(SIZE);
  });

  test("429 with Retry-After is honoured (fractional seconds) instead of the backoff", async () => {
    hub.addFault({ kind: "status", status: 429, headers: { "retry-after": "0.05" }, on: "cdn" });
    hub.addFault({ kind: "status", status: 429, headers: { "retry-after": "0.05" }, api: true });
    const t0 = performance.now();
    // A 10-minute backoff: were Retry-After ignored, the test timeout would end this.
    const r = await prov({ retryBaseMs: 600_000, retryMaxMs: 600_000 }).download(`hf:${REPO}`);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(50); // it did wait the 0.05 s asked for
    expect(hub.log.filter((e) => e.status === 429)).toHaveLength(2);
    expect(r.size_bytes).toBe(SIZE);
  });

  test("5xx are retried; persistent 5xx end in HUB_UNREACHABLE after maxRetries", async () => {
    hub.addFault({ kind: "status", status: 500, on: "hub", times: 2 });
    const ok = await prov().download(`hf:${REPO}`);
    expect(ok.stats.retries).toBe(2);

    rmSync(join(dir, "models"), { recursive: true, force: true });
    hub.clearLog();
    hub.addFault({ kind: "status", status: 503, on: "hub", times: 1000 });
    const e = await rejection(prov({ maxRetries: 2, maxParallelParts: 1 }).download(`hf:${REPO}`));
    expect(e.status).toBe(502);
    expect(e.code).toBe("HUB_UNREACHABLE");
    expect(hub.log.filter((x) => x.status === 503)).toHaveLength(3);
  });

  test("Retry-After parsing: seconds, fractions, HTTP dates, clamping", () => {
    expect(parseRetryAfter("0.05", 60_000)).toBe(50);
    expect(parseRetryAfter("2", 60_000)).toBe(2000);
    expect(parseRetryAfter("3600", 60_000)).toBe(60_000);
    expect(parseRetryAfter(new Date(10_000 + 1500).toUTCString(), 60_000, 10_000)).toBe(1000); // date has 1 s resolution
    expect(parseRetryAfter("soon", 60_000)).toBeUndefined();
    expect(parseRetryAfter(null, 60_000)).toBeUndefined();
  });
});

describe("disk space", () => {
  test("refuses with INSUFFICIENT_DISK and the numbers, before any byte is fetched", async () => {
    const statfs = (avail: number) => () => ({ bavail: avail / 4, bsize: 4 });
    const e = await rejection(prov({ statfs: statfs(SIZE + 500), diskMarginBytes: 1000 }).download(`hf:${REPO}`));
    expect(e.status).toBe(507);
    expect(e.code).toBe("INSUFFICIENT_DISK");
    expect(e.details).toMatchObject({ required_bytes: SIZE + 1000, available_bytes: SIZE + 500, margin_bytes: 1000 });
    expect(e.message).toContain(String(SIZE + 1000));
    expect(content()).toHaveLength(0);
    const r = await prov({ statfs: statfs(SIZE + 1000), diskMarginBytes: 1000 }).download(`hf:${REPO}`);
    expect(r.size_bytes).toBe(SIZE);
  });

  test("the partial file's blocks are reserved up front and count as already held on resume", async () => {
    hub.addFault({ kind: "stall", atByte: 100_000, ms: 60_000 });
    const ac = new AbortController();
    const first = prov({ maxParallelParts: 1 }).download(`hf:${REPO}`, {
      signal: ac.signal,
      onProgress: (x) => x.bytes_downloaded >= 100_000 && ac.abort(),
    });
    await expect(first).rejects.toThrow();
    const st = statSync(join(blobsDir(), `${sha}.rbee-partial`));
    expect(st.size).toBe(SIZE);
    expect(st.blocks * 512).toBeGreaterThanOrEqual(SIZE); // fallocate(2), not a sparse file
    // No free space at all: the resumed download needs no new blocks, so it is not refused.
    const r = await prov({ statfs: () => ({ bavail: 0, bsize: 4096 }) }).download(`hf:${REPO}`);
    expect(r.stats.bytes_resumed).toBe(100_000);
    // ...whereas a new download with no free space is.
    const e = await rejection(prov({ statfs: () => ({ bavail: 0, bsize: 4096 }) }).download("hf:org/m-GGUF/README.md"));
    expect(e.code).toBe("INSUFFICIENT_DISK");
  });
});

describe("sharing the Hugging Face cache", () => {
  /** Lay out a cache the way `hf download` does. */
  function layOutHfCache(data: Uint8Array) {
    const repoDir = join(dir, "models", "models--org--m-GGUF");
    mkdirSync(join(repoDir, "blobs"), { recursive: true });
    mkdirSync(join(repoDir, "snapshots", commit), { recursive: true });
    mkdirSync(join(repoDir, "refs"), { recursive: true });
    writeFileSync(join(repoDir, "blobs", sha), data);
    symlinkSync(`../../blobs/${sha}`, join(repoDir, "snapshots", commit, FILE));
    writeFileSync(join(repoDir, "refs", "main"), commit);
  }

  test("files the hf CLI fetched are reused without a byte downloaded", async () => {
    layOutHfCache(deterministicBytes(SIZE, 7));
    hub.addFault({ kind: "status", status: 503, times: 1000 }); // file endpoints are dead
    const r = await prov().download(`hf:${REPO}`);
    expect(r.stats.bytes_transferred).toBe(0);
    expect(r.stats.bytes_reused).toBe(SIZE);
    expect(content()).toHaveLength(0);
    expect(hub.log.filter((e) => e.path.includes("/resolve/") || e.server === "cdn")).toHaveLength(0);
  });

  test("with the hub unreachable, a complete cached snapshot is used offline", async () => {
    layOutHfCache(deterministicBytes(SIZE, 7));
    const p = new Provisioner({ ...modelDefaults().provisioner, modelsDir: join(dir, "models"), endpoint: "http://127.0.0.1:1", maxRetries: 0, diskMarginBytes: 0 });
    const r = await p.download(`hf:${REPO}`);
    expect(r.commit).toBe(commit);
    expect(r.metadata!.offline).toBe(true);
    expect(r.files.map((f) => f.path)).toEqual([FILE]);
    expect(new Uint8Array(readFileSync(r.local_path))).toEqual(deterministicBytes(SIZE, 7));
    // a revision the cache does not have still needs the hub
    expect((await rejection(p.plan(hfRef(`hf:${REPO}`), { revision: "v2" }))).code).toBe("HUB_UNREACHABLE");
  });

  test("a cached blob with wrong content is re-verified, discarded and fetched again", async () => {
    const bad = deterministicBytes(SIZE, 7);
    bad[123] = bad[123]! ^ 1;
    layOutHfCache(bad);
    const r = await prov().download(`hf:${REPO}`);
    expect(r.stats.bytes_transferred).toBe(SIZE);
    expect(new Uint8Array(readFileSync(r.local_path))).toEqual(deterministicBytes(SIZE, 7));
  });

  test("and the other way round: what we downloaded is found again with no file request", async () => {
    await prov().download(`hf:${REPO}`);
    hub.clearLog();
    hub.addFault({ kind: "status", status: 503, times: 1000 });
    const r = await prov().download(`hf:${REPO}`); // a fresh provisioner = a restarted hive
    expect(r.stats.bytes_reused).toBe(SIZE);
    expect(content()).toHaveLength(0);
  });

  test("two refs that share a file in one process fetch it once", async () => {
    const p = prov();
    const [a, b] = await Promise.all([p.download(`hf:${REPO}`), p.download(`hf:${REPO}:Q4_K_M`)]);
    expect(a.files[0]!.blob_path).toBe(b.files[0]!.blob_path!);
    expect(servedBytes()).toBe(SIZE);
  });
});
