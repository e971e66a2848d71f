#!/usr/bin/env bun
/**
 * Lifecycle latency bench (fake worker, zero load time). Prints one JSON object to stdout.
 *
 *  (a) spawn overhead: POST /v1/workers/spawn (real HTTP) → `ready` event on hive.bus, minus the
 *      time the same fake worker needs when started directly (Bun.spawn + a tiny callback
 *      receiver) until its GET /health answers 200. Runs are interleaved, the order alternating
 *      (direct first in even runs, hive first in odd ones). Target: median overhead ≤ 15 ms.
 *      Inside it, the spawn preflight (memory estimate + admission, SpawnAdmission) is timed on
 *      its own; target: median ≤ 1 ms with the device detection cached (runs that detected are
 *      reported apart).
 *  (b) exit detection: SIGKILL of a ready worker → `exited` event (restart disabled). Target:
 *      median ≤ 10 ms. Baseline (reported, not judged): SIGKILL of the direct worker → Bun's own
 *      `exited` for it, in the same runs.
 * Pass/fail comes from each figure's ratio to its target; a run that cannot measure (a spawn that
 * fails, a worker left behind) is a failed run (exit 2).
 *
 * Usage: bun bench/lifecycle.ts [runs=50]
 */
import { execFileSync } from "node:child_process";
import { FAKE_WORKER, freePort, startTestHive, type TestHive } from "../test/helpers.ts";
import { benchLog, precondition, rotation, round, runBench, stats, verdict } from "./harness.ts";

const RUNS = Number(process.argv[2] ?? 50);
const WARMUP = 3;
const TARGET_OVERHEAD_MS = 15;
const TARGET_EXIT_MS = 10;
const TARGET_PREFLIGHT_MS = 1;

const log = benchLog("lifecycle");
const now = () => performance.now();
const median = (xs: number[]) => stats(xs).median;

/** Resolves with the performance.now() at which `pred` first holds for an event, or rejects after timeoutMs. */
function waitEvent(seen: Map<string, number>, key: string, timeoutMs = 10_000): Promise<number> {
  return new Promise((resolve, reject) => {
    const deadline = now() + timeoutMs;
    const poll = () => {
      const t = seen.get(key);
      if (t !== undefined) return resolve(t);
      if (now() > deadline) return reject(new Error(`timed out waiting for ${key}`));
      setTimeout(poll, 1);
    };
    poll();
  });
}

// ------------------------------------------------------------------ direct start (baseline)

const direct = new Set<Bun.Subprocess>();

async function directRun(callbackPort: number, callbacks: Map<string, number>, i: number) {
  const id = `direct-${i}`;
  const port = freePort();
  const t0 = now();
  const proc = Bun.spawn(
    [FAKE_WORKER, "--worker-id", id, "--model", "/tmp/m.gguf", "--model-ref", "file:/tmp/m.gguf", "--backend", "cpu",
      "--device", "0", "--port", String(port), "--callback-url", `http://127.0.0.1:${callbackPort}/v1/workers/ready`],
    { stdin: "ignore", stdout: "ignore", stderr: "ignore" },
  );
  direct.add(proc);
  try {
    const tCallback = await waitEvent(callbacks, id);
    // The worker listens right after its callback: poll /health as tightly as we can.
    for (;;) {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/health`);
        await res.arrayBuffer();
        if (res.status === 200) break;
      } catch {
        /* not listening yet */
      }
      if (now() - t0 > 10_000) throw new Error(`direct worker ${id}: /health never answered 200`);
      await Bun.sleep(1);
    }
    const tHealthy = now();
    const tKill = now();
    proc.kill("SIGKILL");
    await proc.exited;
    const exited = now() - tKill;
    return { total: tHealthy - t0, toCallback: tCallback - t0, callbackToHealthy: tHealthy - tCallback, exited };
  } finally {
    proc.kill("SIGKILL");
    await proc.exited;
    direct.delete(proc);
  }
}

// ------------------------------------------------------------------ through the hive

async function hiveRun(h: TestHive, seen: Map<string, number>) {
  const t0 = now();
  const res = await h.api("/v1/workers/spawn", { json: { model_ref: h.modelRef, backend: "cpu", device: 0 } });
  if (res.status !== 200) throw new Error(`spawn failed: ${res.status} ${await res.text()}`);
  const { worker_id: id } = (await res.json()) as { worker_id: string };
  const tReady = await waitEvent(seen, `ready:${id}`);
  const pid = h.registry.live(id)?.pid;
  if (!pid) throw new Error(`no pid for ready worker ${id}`);
  const tKill = now();
  process.kill(pid, "SIGKILL");
  const tExited = await waitEvent(seen, `exited:${id}`);
  const del = await h.api(`/v1/workers/${id}`, { method: "DELETE" });
  await del.arrayBuffer();
  precondition(del.status === 200, `DELETE of exited worker ${id} answered ${del.status}`);
  return {
    ready: tReady - t0,
    toSpawned: seen.get(`spawned:${id}`)! - t0,
    spawnedToCallback: seen.get(`callback:${id}`)! - seen.get(`spawned:${id}`)!,
    callbackToReady: tReady - seen.get(`callback:${id}`)!,
    exited: tExited - tKill,
  };
}

// ------------------------------------------------------------------ main

function stragglers(marker: string): number[] {
  try {
    return execFileSync("pgrep", ["-f", marker], { encoding: "utf8" }).split("\n").filter(Boolean).map(Number);
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
}

let hive: TestHive | undefined;
const hivePids = new Set<number>();
let receiver: ReturnType<typeof Bun.serve> | undefined;

async function cleanup() {
  for (const p of direct) p.kill("SIGKILL");
  await hive?.close().catch(() => {});
  for (const pid of hivePids) {
    try {
      process.kill(-pid, "SIGKILL"); // workers lead their own process group
    } catch {
      /* gone */
    }
  }
  receiver?.stop(true);
}

await runBench("lifecycle", async () => {
  const callbacks = new Map<string, number>();
  receiver = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const url = new URL(req.url);
      if (url.pathname === "/v1/workers/ready") callbacks.set(((await req.json()) as { worker_id: string }).worker_id, now());
      return new Response("ok");
    },
  });

  hive = await startTestHive(); // restart disabled, monitor idle (interval 3600 s)
  const seen = new Map<string, number>();
  // Time the preflight where the spawn path calls it: estimate() starts it, admit() ends it.
  const preflight: Array<{ ms: number; detected: boolean }> = [];
  const { admission, inventory } = hive.resources;
  const estimate = admission.estimate.bind(admission);
  const admit = admission.admit.bind(admission);
  let started = 0;
  let probesBefore = 0;
  admission.estimate = (model, context) => {
    started = now();
    probesBefore = inventory.probes;
    return estimate(model, context);
  };
  admission.admit = async (req) => {
    try {
      return await admit(req);
    } finally {
      preflight.push({ ms: now() - started, detected: inventory.probes !== probesBefore });
    }
  };
  hive.bus.subscribe((e) => {
    const t = now();
    if (e.type === "spawned") hivePids.add(e.data.pid);
    if ("worker_id" in e.data) seen.set(`${e.type}:${e.data.worker_id}`, t);
  });

  const h: Array<Awaited<ReturnType<typeof hiveRun>>> = [];
  const d: Array<Awaited<ReturnType<typeof directRun>>> = [];
  log(`${WARMUP} warm-up + ${RUNS} interleaved runs (direct start and through the hive, alternating which goes first)`);
  for (let i = 0; i < WARMUP + RUNS; i++) {
    let dr: Awaited<ReturnType<typeof directRun>> | undefined;
    let hr: Awaited<ReturnType<typeof hiveRun>> | undefined;
    for (const side of rotation(i, ["direct", "hive"] as const)) {
      if (side === "direct") dr = await directRun(receiver.port!, callbacks, i);
      else hr = await hiveRun(hive, seen);
    }
    precondition(dr && hr, `run ${i} measured both sides`);
    if (i >= WARMUP) {
      d.push(dr);
      h.push(hr);
    }
    if ((i + 1) % 10 === 0) log(`${i + 1}/${WARMUP + RUNS}: hive ready ${round(hr.ready)} ms, direct ${round(dr.total)} ms, exit ${round(hr.exited)} ms`);
  }

  const overhead = median(h.map((r) => r.ready)) - median(d.map((r) => r.total));
  const measured = preflight.slice(WARMUP);
  const cachedPreflight = measured.filter((p) => !p.detected).map((p) => p.ms);
  const detectingPreflight = measured.filter((p) => p.detected).map((p) => p.ms);
  const preflightVerdict = verdict(median(cachedPreflight), TARGET_PREFLIGHT_MS, "at most");
  const exitMedian = median(h.map((r) => r.exited));
  await hive.close();
  hive = undefined;
  // close() returns once every worker exited; a straggler means the hive leaked one.
  const left = stragglers(FAKE_WORKER).filter((pid) => hivePids.has(pid));
  precondition(left.length === 0, `no worker of the hive left after close (left: ${left.join(", ")})`);
  const spawnVerdict = verdict(overhead, TARGET_OVERHEAD_MS, "at most");
  const exitVerdict = verdict(exitMedian, TARGET_EXIT_MS, "at most");
  const pass = spawnVerdict.pass && exitVerdict.pass && preflightVerdict.pass;
  const result = {
    bench: "lifecycle",
    runs: RUNS,
    warmup_runs: WARMUP,
    unit: "ms",
    spawn_to_ready: {
      hive: stats(h.map((r) => r.ready)),
      direct_to_healthy: stats(d.map((r) => r.total)),
      overhead_median: round(overhead),
      overhead_paired: stats(h.map((r, i) => r.ready - d[i]!.total)),
      target_overhead_ms: TARGET_OVERHEAD_MS,
      verdict: spawnVerdict,
      pass: spawnVerdict.pass,
      breakdown_median: {
        hive_request_to_spawned: median(h.map((r) => r.toSpawned)),
        hive_spawned_to_callback: median(h.map((r) => r.spawnedToCallback)),
        hive_callback_to_ready: median(h.map((r) => r.callbackToReady)),
        direct_spawn_to_callback: median(d.map((r) => r.toCallback)),
        direct_callback_to_healthy: median(d.map((r) => r.callbackToHealthy)),
      },
    },
    spawn_preflight: {
      cached: stats(cachedPreflight),
      with_detection: detectingPreflight.length ? stats(detectingPreflight) : null,
      target_median_ms: TARGET_PREFLIGHT_MS,
      verdict: preflightVerdict,
      pass: preflightVerdict.pass,
    },
    sigkill_to_exited: {
      ...stats(h.map((r) => r.exited)),
      direct_baseline: stats(d.map((r) => r.exited)),
      target_median_ms: TARGET_EXIT_MS,
      verdict: exitVerdict,
      pass: exitVerdict.pass,
    },
    leftover_workers: left,
    pass,
  };
  return result;
}, cleanup);
