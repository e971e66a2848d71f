#!/usr/bin/env bun
/**
 * Host detection and preflight bench (fake nvidia-smi and rocm-smi on PATH). One JSON object on stdout.
 *
 *  (a) GET /v1/devices over HTTP on one server, detection cached (resources.cache_ttl_s = 3600,
 *      warmed) against uncached (a second inventory with cache_ttl_s = 0 behind another route
 *      prefix of the same server, so every request runs the tools), each interleaved with the
 *      baseline GET /v1/health of the same server, the order rotating from run to run.
 *      Target: cached median − health median ≤ 1 ms. Uncached is reported, not judged: it is the
 *      fakes' process start (Bun, ~50 ms each), not a real nvidia-smi's.
 *  (b) the preflight on the spawn path, in process, detection cached: model footprint (kept) +
 *      estimate + admit + release, with 50 workers already holding memory on the GPU, against an
 *      interleaved baseline of an empty await. Batches of 200 calls; per-call figures.
 *      Target: median added cost < 1 ms per spawn.
 *
 * Usage: bun bench/devices.ts [runs=40] [uncached_runs=15]
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Elysia } from "elysia";
import { createApp } from "../src/app.ts";
import { defaultConfig } from "../src/config.ts";
import { resourcesController } from "../src/http/resources.ts";
import { profileSupport } from "../src/resources/backends.ts";
import { createHostResources } from "../src/resources/index.ts";
import { serve, type HiveServer } from "../src/server.ts";
import { silentLogger } from "../src/shared/logger.ts";
import { fakeSmi, type FakeSmi } from "../test/fixtures/fake-smi-path.ts";
import { tinyLlamaSpec, writeGguf } from "../test/fixtures/gguf-writer.ts";
import { benchLog, precondition, rotation, round, runBench, stats, verdict } from "./harness.ts";

const RUNS = Number(process.argv[2] ?? 40);
const UNCACHED_RUNS = Number(process.argv[3] ?? 15);
const WARMUP = 3;
const BATCH = 200;
const TARGET_DEVICES_OVERHEAD_MS = 1;
const TARGET_PREFLIGHT_MS = 1;
const log = benchLog("devices");
const now = () => performance.now();

let server: HiveServer | undefined;
let smi: FakeSmi | undefined;
let work: string | undefined;

async function timed(url: string, headers: Record<string, string>): Promise<number> {
  const t0 = now();
  const res = await fetch(url, { headers });
  await res.arrayBuffer();
  const ms = now() - t0;
  precondition(res.status === 200, `${url} answered ${res.status}`);
  return ms;
}

await runBench(
  "devices",
  async () => {
    work = mkdtempSync(join(tmpdir(), "rbee-bench-devices-"));
    smi = fakeSmi();
    const env = smi.env({ nvidia: "two-gpus", rocm: "mi210x2" });
    const make = (ttlS: number) => {
      const config = defaultConfig(work!);
      config.resources.cache_ttl_s = ttlS;
      config.resources.overhead_mb = 64; // 50 placed workers of 64 MiB each leave room on a 24 GiB GPU
      const resources = createHostResources({ config, modelsDir: join(work!, "models"), logger: silentLogger, inventory: { env } });
      const controller = (prefix: string) =>
        new Elysia({ prefix }).use(
          resourcesController({
            inventory: resources.inventory,
            preflight: resources.preflight,
            profiles: () => profileSupport(config, work!),
            counts: () => ({ models: 0, workers: resources.ledger.list().length }),
            estimateModel: async () => {
              throw new Error("not used");
            },
          }),
        );
      return { config, resources, controller };
    };
    const cached = make(3600);
    const uncached = make(0);
    const token = "bench-token-0123456789abcdef";
    const app = createApp({ config: cached.config, logger: silentLogger, apiToken: token, controllers: [cached.controller(""), uncached.controller("/uncached")] });
    server = serve((r) => app.fetch(r), { host: "127.0.0.1", port: 0, bodyLimitBytes: 1 << 20, logger: silentLogger });
    const headers = { authorization: `Bearer ${token}` };
    const url = server.url;

    // (a) GET /v1/devices
    const health: number[] = [];
    const devicesCached: number[] = [];
    const healthU: number[] = [];
    const devicesUncached: number[] = [];
    log(`${WARMUP} warm-up + ${RUNS} cached runs, ${UNCACHED_RUNS} uncached runs, each beside GET /v1/health`);
    for (let i = 0; i < WARMUP + RUNS; i++) {
      const got: Record<string, number> = {};
      for (const side of rotation(i, ["health", "devices"] as const)) got[side] = await timed(`${url}${side === "health" ? "/v1/health" : "/v1/devices"}`, headers);
      if (i >= WARMUP) {
        health.push(got.health!);
        devicesCached.push(got.devices!);
      }
    }
    precondition(cached.resources.inventory.probes === 1, `the cached inventory probed once (probed ${cached.resources.inventory.probes} times)`);
    for (let i = 0; i < UNCACHED_RUNS; i++) {
      const got: Record<string, number> = {};
      for (const side of rotation(i, ["health", "devices"] as const)) got[side] = await timed(`${url}${side === "health" ? "/v1/health" : "/uncached/v1/devices"}`, headers);
      healthU.push(got.health!);
      devicesUncached.push(got.devices!);
    }
    precondition(uncached.resources.inventory.probes === UNCACHED_RUNS, `the uncached inventory probed at every request (${uncached.resources.inventory.probes}/${UNCACHED_RUNS})`);
    const devicesOverhead = stats(devicesCached).median - stats(health).median;

    // (b) preflight cost, cached detection, 50 workers already placed on gpu0.
    const r = cached.resources;
    for (let i = 0; i < 50; i++) {
      await r.preflight.admit({ workerId: `held-${i}`, backend: "cuda", device: 0, estimate: r.preflight.estimate({ weightsBytes: 1, contextLength: null, layers: null, embedding: null, heads: null, kvHeads: null, keyLength: null, valueLength: null, kvBytesPerElement: 2 }) });
      // Running workers: their real use is looked up in the device's per-process list at every admission.
      r.preflight.attachPid(`held-${i}`, 4_000_000 + i);
    }
    const model = join(work, "tiny.gguf");
    writeGguf(model, tinyLlamaSpec());
    const entry = { local_path: model, format: "gguf", metadata: {}, files: [{ path: "tiny.gguf", local_path: model, size_bytes: Bun.file(model).size }] };
    await r.footprints.shape(entry); // read once, kept: the spawn path reuses it
    const preflightOnce = async (i: number) => {
      const estimate = r.preflight.estimate(await r.footprints.shape(entry));
      await r.preflight.admit({ workerId: `bench-${i}`, backend: "cuda", device: 0, estimate });
      r.preflight.release(`bench-${i}`);
    };
    const baselineOnce = async () => {
      await Promise.resolve();
    };
    const per: number[] = [];
    const base: number[] = [];
    for (let i = 0; i < WARMUP + RUNS; i++) {
      const got: Record<string, number> = {};
      for (const side of rotation(i, ["baseline", "preflight"] as const)) {
        const t0 = now();
        for (let k = 0; k < BATCH; k++) await (side === "preflight" ? preflightOnce(k) : baselineOnce());
        got[side] = (now() - t0) / BATCH;
      }
      if (i >= WARMUP) {
        per.push(got.preflight!);
        base.push(got.baseline!);
      }
    }
    precondition(r.ledger.list().length === 50, "every bench reservation was released");
    const preflightCost = stats(per).median - stats(base).median;
    const ms3 = (xs: number[]) => {
      const s = [...xs].sort((a, b) => a - b);
      return { median: Math.round(s[Math.floor(s.length / 2)]! * 1000) / 1000, min: Math.round(s[0]! * 1000) / 1000, n: s.length };
    };

    const devicesVerdict = verdict(devicesOverhead, TARGET_DEVICES_OVERHEAD_MS, "at most");
    const preflightVerdict = verdict(preflightCost, TARGET_PREFLIGHT_MS, "at most");
    return {
      bench: "devices",
      unit: "ms",
      devices: {
        cached: stats(devicesCached),
        health_baseline: stats(health),
        cached_overhead_median: round(devicesOverhead),
        uncached: stats(devicesUncached),
        uncached_health_baseline: stats(healthU),
        uncached_note: "every request runs the fake tools (3 nvidia-smi calls, 2 of them in parallel, and rocm-smi): Bun process starts, not a real tool",
        target_cached_overhead_ms: TARGET_DEVICES_OVERHEAD_MS,
        verdict: devicesVerdict,
        pass: devicesVerdict.pass,
      },
      preflight: {
        per_call: ms3(per),
        baseline_per_call: ms3(base),
        added_median: Math.round(preflightCost * 1000) / 1000,
        workers_already_placed: 50,
        batch: BATCH,
        target_added_ms: TARGET_PREFLIGHT_MS,
        verdict: preflightVerdict,
        pass: preflightVerdict.pass,
      },
      pass: devicesVerdict.pass && preflightVerdict.pass,
    };
  },
  async () => {
    server?.stop(true);
    smi?.cleanup();
    if (work) rmSync(work, { recursive: true, force: true });
  },
);
