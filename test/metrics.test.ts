/**
 * GET /metrics: values after real lifecycle events (spawn, ready, crash, restart, idle stop,
 * download, refusals), read by parsing the exposition; promtool on a live scrape; the scrape cost
 * with 100 workers.
 */
import { afterEach, expect, test } from "bun:test";
import { BUILD_COMMIT, BUILD_TARGET, VERSION } from "../src/version.ts";
import { HiveMetrics } from "../src/metrics.ts";
import { createHiveBus } from "../src/events.ts";
import { newWorkerRecord, WorkerRegistry } from "../src/workers/registry.ts";
import { silentLogger } from "../src/shared/logger.ts";
import { FakeHub } from "./fixtures/fake-hub.ts";
import { fakeSmi, type FakeSmi } from "./fixtures/fake-smi-path.ts";
import { memoryLogger, startTestHive, tempDir, testConfig, waitFor, type TestHive } from "./helpers.ts";
import { startHive } from "../src/hive.ts";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const hives: TestHive[] = [];
const dirs: Array<() => void> = [];
const hubs: FakeHub[] = [];
const smis: FakeSmi[] = [];
afterEach(async () => {
  await Promise.all(hives.splice(0).map((h) => h.close()));
  await Promise.all(hubs.splice(0).map((h) => h.stop()));
  for (const s of smis.splice(0)) s.cleanup();
  for (const d of dirs.splice(0)) d();
});

/** Sample lines of an exposition as `name{labels}` → value (labels exactly as printed). */
export function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

async function scrape(h: TestHive): Promise<Map<string, number>> {
  const res = await h.api("/metrics", { auth: false });
  expect(res.status).toBe(200);
  return samples(await res.text());
}

/** The values of one metric family (without histogram buckets), `name{labels}` → value. */
const family = (m: Map<string, number>, name: string) =>
  Object.fromEntries([...m].filter(([k]) => k === name || k.startsWith(`${name}{`)));

const SIZE = 300_000;

test("metric values follow spawn, ready, inference, crash, restart, idle stop and a download", async () => {
  const hub = await FakeHub.start({ chunkBytes: 16 * 1024, ggufHeaders: true });
  hubs.push(hub);
  hub.addRepo({ id: "org/tiny-GGUF", files: [{ path: "tiny.Q4_K_M.gguf", size: SIZE, seed: 1 }] });
  const h = await startTestHive({
    token: "metrics-token-0123456789",
    env: { HF_ENDPOINT: hub.url },
    config: {
      restart: { enabled: true, base_backoff_s: 0, jitter: 0 },
      idle: { check_interval_s: 0.05, timeout_s: 0.3 },
      downloads: { disk_margin_mb: 0, progress_interval_s: 0.01 },
    },
  });
  hives.push(h);

  // Spawn → ready (a worker that is never idle-stopped).
  const { worker_id: a } = await h.spawn({ keep_alive_s: 0 });
  const ready = await h.waitState(a, (w) => w.state === "idle", "a ready");
  let m = await scrape(h);
  expect(family(m, "rbee_hive_workers")).toEqual({ 'rbee_hive_workers{state="idle",phase="running",backend="cpu",device="0"}': 1 });
  expect(m.get("rbee_hive_worker_start_duration_seconds_count")).toBe(1);
  expect(m.get(`rbee_hive_worker_in_flight_requests{worker_id="${a}"}`)).toBe(0);
  expect(m.get("rbee_hive_workers_restarts")).toBe(0);
  expect(m.get(`rbee_hive_build_info{version="${VERSION}",commit="${BUILD_COMMIT}",target="${BUILD_TARGET}",bun_version="${Bun.version}"}`)).toBe(1);
  // Gauges are set from the registry on each scrape: a second scrape reads the same, nothing grows.
  expect(family(await scrape(h), "rbee_hive_workers")).toEqual(family(m, "rbee_hive_workers"));

  // Inference through the hive: chunks counted per worker.
  const inference = await h.api(`/v1/workers/${a}/inference`, { json: { job_id: "j1", prompt: "hi" } });
  expect(inference.status).toBe(200);
  await inference.text();
  m = await waitFor(async () => {
    const s = await scrape(h);
    return (s.get(`rbee_hive_worker_streamed_chunks_total{worker_id="${a}"}`) ?? 0) > 0 ? s : undefined;
  }, { what: "streamed chunks counted" });
  // The fake worker writes 7 SSE events (started, 4 tokens, end, [DONE]); TCP may join some.
  const chunks = m.get(`rbee_hive_worker_streamed_chunks_total{worker_id="${a}"}`)!;
  expect(chunks).toBeGreaterThanOrEqual(1);
  expect(chunks).toBeLessThanOrEqual(7);

  // Crash (SIGKILL) → restart with the same id → ready again.
  process.kill(ready.pid, "SIGKILL");
  await h.waitState(a, (w) => w.state === "idle" && w.restart_count === 1, "a restarted");
  m = await scrape(h);
  expect(m.get('rbee_hive_worker_exits_total{reason="killed"}')).toBe(1);
  expect(m.get('rbee_hive_worker_restarts_total{reason="killed"}')).toBe(1);
  expect(m.get("rbee_hive_worker_restart_failures_total")).toBe(0);
  expect(m.get("rbee_hive_worker_start_duration_seconds_count")).toBe(2);
  expect(m.get("rbee_hive_workers_restarts")).toBe(1);

  // A second worker, stopped by the idle timeout (0.3 s): graceful, its per-worker series gone.
  const { worker_id: b } = await h.spawn();
  await h.waitState(b, (w) => w.phase === "exited", "b idle-stopped");
  m = await scrape(h);
  expect(m.get('rbee_hive_worker_exits_total{reason="idle"}')).toBe(1);
  expect(m.get("rbee_hive_workers_graceful_shutdown_total")).toBe(1);
  expect(m.get("rbee_hive_workers_force_killed_total")).toBe(0);
  expect([...m.keys()].filter((k) => k.includes(b))).toEqual([]);
  expect(family(m, "rbee_hive_workers")).toEqual({ 'rbee_hive_workers{state="idle",phase="running",backend="cpu",device="0"}': 1 });

  // A model download from the fake hub.
  const started: any = await (await h.api("/v1/models/download", { json: { model_ref: "hf:org/tiny-GGUF" } })).json();
  await waitFor(async () => ((await (await h.api("/v1/models/downloads")).json()) as any).downloads.some((d: any) => d.id === started.download_id && d.state === "complete"), {
    what: "download complete",
  });
  m = await scrape(h);
  expect(m.get('rbee_hive_downloads_total{outcome="complete"}')).toBe(1);
  expect(m.get("rbee_hive_models_downloaded_total")).toBe(1);
  expect(m.get("rbee_hive_download_bytes_total")).toBe(SIZE);
  expect(m.get('rbee_hive_download_duration_seconds_count{outcome="complete"}')).toBe(1);
  expect(m.get("rbee_hive_download_active")).toBe(0);

  // Requests by route template, never by raw path; unknown paths are one label.
  await h.api(`/v1/workers/${a}`);
  await h.api("/no/such/route/123");
  m = await scrape(h);
  expect(m.get('rbee_hive_http_request_duration_seconds_count{method="POST",route="/v1/workers/spawn",status="200"}')).toBe(2);
  expect(m.get('rbee_hive_http_request_duration_seconds_count{method="GET",route="/v1/workers/:id",status="200"}')).toBeGreaterThanOrEqual(1);
  expect(m.get('rbee_hive_http_request_duration_seconds_count{method="GET",route="unmatched",status="404"}')).toBe(1);
  expect(m.get('rbee_hive_http_request_duration_seconds_count{method="POST",route="/v1/workers/:id/inference",status="200"}')).toBe(1);
  expect([...m.keys()].filter((k) => k.startsWith("rbee_hive_http_request") && (k.includes(a) || k.includes("/no/such")))).toEqual([]);
});

test("a load that keeps failing: restart failures and the circuit breaker; spawn refusals for memory", async () => {
  const h = await startTestHive({
    workerEnv: { FAKE_WORKER_FAIL_LOAD: "1" },
    config: { restart: { enabled: true, base_backoff_s: 0, jitter: 0, max_load_failures: 2 } },
  });
  hives.push(h);
  const { worker_id } = await h.spawn();
  await h.waitState(worker_id, (w) => w.phase === "crash_loop", "crash_loop");
  const m = await scrape(h);
  expect(m.get('rbee_hive_worker_exits_total{reason="load_failed"}')).toBe(2);
  expect(m.get('rbee_hive_worker_restarts_total{reason="load_failed"}')).toBe(1);
  expect(m.get("rbee_hive_worker_restart_failures_total")).toBe(1);
  expect(m.get("rbee_hive_circuit_breaker_activations_total")).toBe(1);
  expect(family(m, "rbee_hive_workers")).toEqual({ 'rbee_hive_workers{state="loading",phase="crash_loop",backend="cpu",device="0"}': 1 });

  const refusing = await startTestHive({ config: { resources: { ram_reserve_mb: 1e12 } } });
  hives.push(refusing);
  const res = await refusing.api("/v1/workers/spawn", { json: { model_ref: refusing.modelRef, backend: "cpu", device: 0 } });
  expect(res.status).toBe(507);
  expect((await scrape(refusing)).get('rbee_hive_worker_spawn_resource_failures_total{code="INSUFFICIENT_RAM"}')).toBe(1);
});

test("host memory, disk and GPUs come from the device detection a scrape starts, never waited for", async () => {
  const smi = fakeSmi({ rocm: false });
  smis.push(smi);
  const h = await startTestHive({ overrides: { resources: { inventory: { env: smi.env({ nvidia: "two-gpus" }) } } } });
  hives.push(h);
  await scrape(h); // starts the detection
  const m = await waitFor(async () => {
    const s = await scrape(h);
    return s.has("rbee_hive_host_detection_age_seconds") && s.has('rbee_hive_gpu_memory_total_bytes{device="gpu1"}') ? s : undefined;
  }, { what: "host metrics" });
  const resources: any = await (await h.api("/v1/resources")).json();
  const devices: any = await (await h.api("/v1/devices")).json();
  expect(m.get("rbee_hive_memory_total_bytes")).toBe(resources.ram_total_bytes);
  expect(m.get("rbee_hive_disk_total_bytes")).toBe(resources.disk_total_bytes);
  for (const gpu of devices.gpus) {
    expect(m.get(`rbee_hive_gpu_memory_total_bytes{device="${gpu.id}"}`)).toBe(gpu.memory_total_bytes);
    expect(m.get(`rbee_hive_gpu_memory_used_bytes{device="${gpu.id}"}`)).toBe(gpu.memory_used_bytes);
    expect(m.get(`rbee_hive_gpu_utilization_ratio{device="${gpu.id}"}`)).toBe(gpu.utilization_percent / 100);
    expect(m.get(`rbee_hive_gpu_temperature_celsius{device="${gpu.id}"}`)).toBe(gpu.temperature_c);
  }
});

test("promtool check metrics passes on a live scrape", async () => {
  const promtool = Bun.which("promtool");
  if (!promtool) {
    console.log("skipped: promtool is not installed (Debian package prometheus; .ci/run installs it)");
    return;
  }
  const h = await startTestHive({ token: "metrics-token-0123456789", config: { restart: { enabled: true, base_backoff_s: 0 } } });
  hives.push(h);
  const { worker_id } = await h.spawn();
  const w = await h.waitState(worker_id, (x) => x.state === "idle", "idle");
  process.kill(w.pid, "SIGKILL");
  await h.waitState(worker_id, (x) => x.state === "idle" && x.restart_count === 1, "restarted");
  await h.api("/v1/workers/list");
  await h.api("/v1/workers/list", { auth: false }); // a 401
  const text = await (await h.api("/metrics", { auth: false })).text();
  const proc = Bun.spawn([promtool, "check", "metrics"], { stdin: new TextEncoder().encode(text), stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  expect(out + err).toBe("");
  expect(code).toBe(0);
});

test("a scrape with 100 workers renders every worker once and takes well under a second (hang guard; the bench measures)", async () => {
  const bus = createHiveBus(100, Date.now);
  const registry = new WorkerRegistry(silentLogger, Date.now, 60_000);
  const metrics = new HiveMetrics({ bus, workers: registry });
  for (let i = 0; i < 100; i++) {
    registry.add({ ...newWorkerRecord({ id: `worker-${i}`, url: `http://127.0.0.1:${9000 + i}`, model_ref: "hf:org/m", backend: "cuda", device: i % 8, port: 9000 + i, profile: "p", phase: "running", now: Date.now() }), state: "idle" });
  }
  const started = performance.now();
  const m = samples(await metrics.render());
  expect(performance.now() - started).toBeLessThan(1000);
  const workers = family(m, "rbee_hive_workers");
  expect(Object.values(workers).reduce((a, b) => a + b, 0)).toBe(100);
  expect(Object.keys(family(m, "rbee_hive_worker_in_flight_requests"))).toHaveLength(100);
  // Gone workers leave no series behind.
  for (let i = 0; i < 100; i++) registry.retire(`worker-${i}`);
  expect(Object.keys(family(samples(await metrics.render()), "rbee_hive_worker_in_flight_requests"))).toHaveLength(0);
});

test("a graceful shutdown's duration is reported by the next hive on the same data dir, once", async () => {
  const d = tempDir();
  dirs.push(d.cleanup);
  const noTools = join(d.path, "no-tools");
  mkdirSync(noTools);
  const start = () => startHive(testConfig(d.path), memoryLogger(), { echo: null, resources: { inventory: { env: { PATH: noTools } } } });
  const first = await start();
  await first.shutdown.run("test");
  const recorded = JSON.parse(readFileSync(join(d.path, "last-shutdown.json"), "utf8"));
  expect(recorded).toEqual({ reason: "test", ms: expect.any(Number), workers_total: 0, graceful: 0, forced: 0, kept: 0, at: expect.any(Number) });
  const second = await start();
  try {
    const m = samples(await (await fetch(`${second.url}/metrics`)).text());
    expect(m.get("rbee_hive_shutdown_duration_seconds_count")).toBe(1);
    expect(m.get("rbee_hive_shutdown_duration_seconds_sum")).toBe(recorded.ms / 1000);
    // Reported once: the record is gone, a hive that then crashes leaves nothing to report twice.
    expect(existsSync(join(d.path, "last-shutdown.json"))).toBe(false);
  } finally {
    await second.shutdown.run("test");
  }
});

test("download retries are counted by cause: a stalled part and a failed one", async () => {
  const hub = await FakeHub.start({ chunkBytes: 16 * 1024, ggufHeaders: true });
  hubs.push(hub);
  hub.addRepo({ id: "org/tiny-GGUF", files: [{ path: "tiny.Q4_K_M.gguf", size: SIZE, seed: 1 }] });
  hub.addFault({ kind: "stall", atByte: 100_000, ms: 60_000, on: "cdn" });
  hub.addFault({ kind: "status", status: 500, on: "cdn" });
  const h = await startTestHive({ env: { HF_ENDPOINT: hub.url }, config: { downloads: { disk_margin_mb: 0, stall_timeout_s: 0.2 } } });
  hives.push(h);
  const started: any = await (await h.api("/v1/models/download", { json: { model_ref: "hf:org/tiny-GGUF" } })).json();
  await waitFor(async () => ((await (await h.api("/v1/models/downloads")).json()) as any).downloads.some((d: any) => d.id === started.download_id && d.state === "complete"), {
    what: "download complete",
  });
  hub.releaseStalls();
  const m = await scrape(h);
  expect(family(m, "rbee_hive_download_retries_total")).toEqual({ 'rbee_hive_download_retries_total{cause="stall"}': 1, 'rbee_hive_download_retries_total{cause="error"}': 1 });
  expect(m.get('rbee_hive_downloads_total{outcome="complete"}')).toBe(1);
});
