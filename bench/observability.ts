/**
 * Observability benchmark (not a test).
 *
 *   bun bench/observability.ts [scrapes=200]   → prints one JSON object
 *
 * (a) GET /metrics of an in-process hive whose registry holds 100 workers (records only: a scrape
 *     reads the registry, not the processes) after 2,000 requests over 8 routes (so the request
 *     histogram has its label sets), interleaved with GET /v1/health on the same server (baseline,
 *     order alternating). Target: median scrape ≤ 5 ms.
 * (b) The hive → queen heartbeat while the hive downloads 1 GiB: a real daemon (`src/main.ts`) in
 *     its own process with `heartbeat_interval_s = 0.1`, the fake hub in another process (so the
 *     hub's serving does not share this process's loop), a fake queen here recording arrival times.
 *     Gaps between beats: deviation from the interval while idle (before and after: baseline) and
 *     while the 1 GiB download runs. Target: p99 deviation during the download ≤ 50 ms.
 * Exit 0 pass, 1 a target missed, 2 error. Child mode: bun bench/observability.ts --hub <size>
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FakeHub } from "../test/fixtures/fake-hub.ts";
import { startHive } from "../src/hive.ts";
import { loadConfig } from "../src/config.ts";
import { silentLogger } from "../src/shared/logger.ts";
import { newWorkerRecord } from "../src/workers/registry.ts";
import { benchLog, round, runBench, stats, verdict } from "./harness.ts";

const GiB = 1024 ** 3;
const log = benchLog("observability");
// The hub child (--hub) is SIGKILLed and cannot clean up: only the bench itself makes a work dir.
const work = process.argv[2] === "--hub" ? "" : mkdtempSync(join(tmpdir(), "rbee-bench-obs-"));
const children: Array<{ kill(sig?: number): void; exited: Promise<number> }> = [];

if (process.argv[2] === "--hub") {
  const size = Number(process.argv[3]);
  const hub = await FakeHub.start({ ggufHeaders: true });
  hub.addRepo({ id: "bench/Big-GGUF", files: [{ path: "big.Q4_K_M.gguf", size, seed: 7 }] });
  process.stdout.write(`${hub.url}\n`);
  await new Promise(() => {}); // until killed
}

async function scrapeBench(scrapes: number) {
  const dataDir = join(work, "scrape");
  const loaded = loadConfig({ env: { HOME: dataDir, RBEE_DATA_DIR: dataDir }, flags: { addr: "127.0.0.1:0" } });
  loaded.config.monitor.interval_s = 3600;
  loaded.config.idle.timeout_s = 0;
  const hive = await startHive(loaded, silentLogger, { echo: null, resources: { inventory: { env: { PATH: join(work, "no-tools") } } } });
  try {
    for (let i = 0; i < 100; i++) {
      const record = newWorkerRecord({ id: `worker-bench-${i}`, url: `http://127.0.0.1:${30000 + i}`, model_ref: "hf:org/m", backend: "cuda", device: i % 8, port: 30000 + i, profile: "llm-worker-rbee", phase: "running", now: Date.now() });
      hive.registry.add({ ...record, state: i % 3 === 0 ? "busy" : "idle", in_flight: i % 3 });
    }
    const paths = ["/v1/health", "/v1/workers/list", "/v1/workers/worker-bench-1", "/v1/workers/worker-bench-2/logs", "/v1/models", "/v1/hive", "/nope", "/v1/resources"];
    for (let i = 0; i < 2000; i++) await (await fetch(hive.url + paths[i % paths.length])).arrayBuffer();
    const timed = async (path: string) => {
      const t = performance.now();
      const res = await fetch(hive.url + path);
      await res.arrayBuffer();
      return performance.now() - t;
    };
    const metrics: number[] = [];
    const health: number[] = [];
    for (let i = 0; i < 20; i++) await timed("/metrics"); // warm-up
    for (let i = 0; i < scrapes; i++) {
      if (i % 2 === 0) {
        metrics.push(await timed("/metrics"));
        health.push(await timed("/v1/health"));
      } else {
        health.push(await timed("/v1/health"));
        metrics.push(await timed("/metrics"));
      }
    }
    const body = await (await fetch(hive.url + "/metrics")).text();
    return {
      workers: hive.registry.list().length,
      series: body.split("\n").filter((l) => l && !l.startsWith("#")).length,
      bytes: body.length,
      scrape_ms: stats(metrics),
      health_ms: stats(health),
      verdict: verdict(stats(metrics).median, 5, "at most"),
    };
  } finally {
    await hive.shutdown.run("bench done");
  }
}

/** A queen-rbee stand-in: arrival times of heartbeats (ms, this process's monotonic clock). */
function fakeQueen() {
  const arrivals: number[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      if (new URL(req.url).pathname === "/v1/heartbeat") arrivals.push(performance.now());
      await req.arrayBuffer();
      return Response.json({ ok: true });
    },
  });
  return { url: `http://127.0.0.1:${server.port}`, arrivals, stop: () => server.stop(true) };
}

async function heartbeatBench(size: number) {
  const INTERVAL_MS = 100;
  const queen = fakeQueen();
  const hubProc = Bun.spawn(["bun", import.meta.path, "--hub", String(size)], { stdout: "pipe", stderr: "inherit" });
  children.push(hubProc);
  const reader = hubProc.stdout.getReader();
  let hubUrl = "";
  while (!hubUrl.includes("\n")) hubUrl += new TextDecoder().decode((await reader.read()).value);
  hubUrl = hubUrl.trim();
  const dataDir = join(work, "daemon");
  const config = join(work, "hive.toml");
  writeFileSync(config, `[queen]\nheartbeat_interval_s = ${INTERVAL_MS / 1000}\n[downloads]\ndisk_margin_mb = 0\n`);
  const port = 20000 + Math.floor(Math.random() * 20000);
  const daemon = Bun.spawn(["bun", join(import.meta.dir, "../src/main.ts"), "daemon", "--addr", `127.0.0.1:${port}`, "--config", config, "--log-format", "json"], {
    env: { ...process.env, RBEE_DATA_DIR: dataDir, HF_ENDPOINT: hubUrl, QUEEN_CALLBACK_URL: queen.url, LLORCH_API_TOKEN: "", RBEE_LOG: "warn" },
    stdout: "ignore",
    stderr: "inherit",
  });
  children.push(daemon);
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    try {
      if ((await fetch(base + "/v1/health")).ok) break;
    } catch {
      // not up yet
    }
    if (i > 500) throw new Error("the daemon did not start");
    await Bun.sleep(20);
  }
  const deviations = (from: number, to: number) => {
    const a = queen.arrivals.slice(from, to);
    return a.slice(1).map((t, i) => Math.abs(t - a[i]! - INTERVAL_MS));
  };
  const idleFor = async (beats: number) => {
    const from = queen.arrivals.length;
    while (queen.arrivals.length < from + beats) await Bun.sleep(50);
    return deviations(from, from + beats);
  };
  const before = await idleFor(40);
  const started: any = await (await fetch(base + "/v1/models/download", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model_ref: "hf:bench/Big-GGUF" }) })).json();
  const from = queen.arrivals.length;
  const t0 = performance.now();
  for (;;) {
    const job = ((await (await fetch(base + "/v1/models/downloads")).json()) as any).downloads.find((d: any) => d.id === started.download_id);
    if (job?.state === "complete") break;
    if (job?.state === "error") throw new Error(`download failed: ${JSON.stringify(job.error)}`);
    await Bun.sleep(100);
  }
  const downloadMs = performance.now() - t0;
  const during = deviations(from, queen.arrivals.length);
  const after = await idleFor(40);
  const metrics = await (await fetch(base + "/metrics")).text();
  daemon.kill("SIGTERM");
  await daemon.exited;
  hubProc.kill();
  await hubProc.exited;
  queen.stop();
  const p99 = (xs: number[]) => round([...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil(0.99 * xs.length) - 1)]!);
  const max = (xs: number[]) => round(Math.max(...xs));
  return {
    interval_ms: INTERVAL_MS,
    download: { bytes: size, ms: round(downloadMs), mb_per_s: round(size / 1e6 / (downloadMs / 1000)), beats: during.length + 1 },
    deviation_ms: {
      during_download: { ...stats(during), p99: p99(during), max: max(during) },
      idle: { ...stats([...before, ...after]), p99: p99([...before, ...after]), max: max([...before, ...after]) },
    },
    hive_delay_histogram: metrics.split("\n").filter((l) => l.startsWith("rbee_hive_queen_heartbeat_delay_seconds")),
    verdict: verdict(p99(during), 50, "at most"),
  };
}

await runBench(
  "observability",
  async () => {
    const scrapes = Number(process.argv[2] ?? 200);
    log("scrape with 100 workers");
    const scrape = await scrapeBench(scrapes);
    log("heartbeat during a download");
    const heartbeat = await heartbeatBench(Number(process.env.BENCH_SIZE ?? GiB));
    return { bench: "observability", scrape, heartbeat, pass: scrape.verdict.pass && heartbeat.verdict.pass };
  },
  async () => {
    for (const c of children) c.kill(9);
    await Promise.all(children.map((c) => c.exited));
    rmSync(work, { recursive: true, force: true });
  },
);
