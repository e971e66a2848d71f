#!/usr/bin/env bun
/**
 * Restart bench: a hive upgrade with running workers (`keep_workers_on_exit = true`).
 *
 * A real daemon (`src/main.ts daemon`, or the compiled binary in BENCH_HIVE_BIN) runs 20 fake
 * workers. Each run stops it gracefully (SIGTERM: the workers stay) and starts a new one on the
 * same data dir, as `systemctl restart` does during an upgrade. Meanwhile a client streams
 * inference (POST /v1/inference, SSE, 20 tokens 5 ms apart) straight from the workers' own URLs,
 * four requests at a time, round-robin over the workers.
 *
 *  (a) process start of the new hive → its GET /v1/workers/list answers with all 20 workers idle
 *      (adopted: same ids and pids). Target: median ≤ 500 ms.
 *      Baseline (reported, interleaved, order rotating): the same daemon on an empty data dir,
 *      process start → its GET /v1/workers/list answers.
 *  (b) worker restarts over all runs (restart_count, pids): target 0.
 *  (c) failed client requests during all the upgrades: target 0.
 *  (d) afterwards, SIGKILL of one adopted worker (not the hive's child) → its `exited` event on
 *      GET /v1/events, one worker after another (the restart policy brings each back). Target:
 *      median ≤ 100 ms.
 *  (e) the default policy: SIGKILL of a hive with 5 workers, each with a grandchild → every one of
 *      those 10 processes gone (polled every ms), one hive per run. Target: p90 ≤ 1000 ms.
 *
 * Usage: bun bench/restart.ts [runs=11] [workers=20]
 */
import { join } from "node:path";
import { freePort, groupMembers, pidAlive, tempDir } from "../test/helpers.ts";
import { prepareDataDir } from "../test/fixtures/hive-process.ts";
import { benchLog, precondition, rotation, round, runBench, stats, verdict } from "./harness.ts";

const RUNS = Number(process.argv[2] ?? 11);
const WORKERS = Number(process.argv[3] ?? 20);
const TARGET_ADOPT_MS = 500;
const TARGET_ADOPTED_EXIT_MS = 100;
const TARGET_DIE_WITH_HIVE_MS = 1000;
const KILL_RUNS = 5;
const CLIENT_STREAMS = 4;
const ROOT = join(import.meta.dir, "..");
const HIVE_CMD = process.env.BENCH_HIVE_BIN ? [process.env.BENCH_HIVE_BIN] : [process.execPath, join(ROOT, "src/main.ts")];
const FAKE_WORKER = join(ROOT, "test/fixtures/fake-worker.ts");

const log = benchLog("restart");
const dirs: Array<{ cleanup: () => void }> = [];
const hives = new Set<Bun.Subprocess>();
const groups = new Set<number>();

function startDaemon(dataDir: string, config: string, port: number, keep = true, env: Record<string, string> = {}): { proc: Bun.Subprocess; t0: number } {
  const t0 = performance.now();
  const proc = Bun.spawn([...HIVE_CMD, "daemon", "--addr", `127.0.0.1:${port}`, "--log-format", "json"], {
    env: {
      ...process.env,
      RBEE_DATA_DIR: dataDir,
      RBEE_CONFIG: config,
      RBEE_WORKER_BINARY: FAKE_WORKER,
      RBEE_KEEP_WORKERS_ON_EXIT: keep ? "true" : "false",
      LLORCH_API_TOKEN: "",
      RBEE_LOG: "warn",
      FAKE_WORKER_TOKENS: "20",
      FAKE_WORKER_TOKEN_MS: "5",
      ...env,
    },
    stdin: "ignore",
    stdout: "ignore",
    stderr: "inherit",
  });
  hives.add(proc);
  return { proc, t0 };
}

/** Poll GET /v1/workers/list every 2 ms until `ok` holds; returns ms since t0. */
async function until(port: number, t0: number, ok: (workers: any[]) => boolean, timeoutMs = 20_000): Promise<{ ms: number; workers: any[] }> {
  for (;;) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/v1/workers/list`);
      if (res.ok) {
        const { workers } = (await res.json()) as { workers: any[] };
        if (ok(workers)) return { ms: performance.now() - t0, workers };
      }
    } catch {
      // not listening yet
    }
    if (performance.now() - t0 > timeoutMs) throw new Error("hive did not answer in time");
    await Bun.sleep(2);
  }
}

async function stop(proc: Bun.Subprocess): Promise<number> {
  const t = performance.now();
  proc.kill("SIGTERM");
  const code = await proc.exited;
  hives.delete(proc);
  precondition(code === 0, `hive exited ${code} after SIGTERM`);
  return performance.now() - t;
}

/** Streams inference from the workers' own URLs until stopped; counts what failed. */
function client(urls: string[]) {
  const counts = { ok: 0, failed: 0, errors: [] as string[] };
  let running = true;
  let next = 0;
  const one = async () => {
    while (running) {
      const url = urls[next++ % urls.length]!;
      try {
        const res = await fetch(`${url}/v1/inference`, { method: "POST", body: JSON.stringify({ job_id: "bench", max_tokens: 20 }) });
        const text = await res.text();
        if (res.status === 200 && text.includes("data: [DONE]")) counts.ok++;
        else throw new Error(`status ${res.status}`);
      } catch (e) {
        counts.failed++;
        if (counts.errors.length < 5) counts.errors.push(`${url}: ${String(e)}`);
      }
    }
  };
  const loops = Array.from({ length: CLIENT_STREAMS }, one);
  return {
    counts,
    stop: async () => {
      running = false;
      await Promise.all(loops);
    },
  };
}

async function body() {
  // The hive with workers, and an empty one for the baseline.
  const withDir = tempDir("rbee-bench-restart-");
  const emptyDir = tempDir("rbee-bench-restart-empty-");
  dirs.push(withDir, emptyDir);
  const base = 30000 + Math.floor(Math.random() * 20000);
  const withCfg = prepareDataDir(withDir.path, [base, base + 500]);
  const emptyCfg = prepareDataDir(emptyDir.path, [base + 600, base + 700]);
  const port = freePort();
  const emptyPort = freePort();

  let hive = startDaemon(withDir.path, withCfg.config, port);
  await until(port, hive.t0, () => true);
  log(`spawning ${WORKERS} workers`);
  for (let i = 0; i < WORKERS; i++) {
    const res = await fetch(`http://127.0.0.1:${port}/v1/workers/spawn`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model_ref: withCfg.modelRef, backend: "cpu", device: 0 }),
    });
    precondition(res.status === 200, `spawn answered ${res.status}`);
  }
  const { workers: initial } = await until(port, hive.t0, (ws) => ws.length === WORKERS && ws.every((w) => w.state === "idle"));
  for (const w of initial) groups.add(w.pid);
  const pids = new Map(initial.map((w) => [w.id, w.pid]));
  const c = client(initial.map((w) => w.url));

  const adopt: number[] = [];
  const empty: number[] = [];
  const stops: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    for (const side of rotation(i, ["upgrade", "empty"] as const)) {
      if (side === "upgrade") {
        stops.push(await stop(hive.proc));
        hive = startDaemon(withDir.path, withCfg.config, port);
        const r = await until(port, hive.t0, (ws) => ws.length === WORKERS && ws.every((w) => w.state === "idle" && pids.get(w.id) === w.pid));
        adopt.push(r.ms);
      } else {
        const e = startDaemon(emptyDir.path, emptyCfg.config, emptyPort);
        empty.push((await until(emptyPort, e.t0, () => true)).ms);
        await stop(e.proc);
      }
    }
    log(`run ${i + 1}/${RUNS}: adopted in ${round(adopt.at(-1)!)} ms (empty hive ${round(empty.at(-1)!)} ms), ${c.counts.ok} requests ok, ${c.counts.failed} failed`);
  }
  await Bun.sleep(200); // a few more requests after the last upgrade
  await c.stop();
  const { workers: final } = await until(port, hive.t0, () => true);
  const restarts = final.reduce((n, w) => n + w.restart_count, 0) + final.filter((w) => pids.get(w.id) !== w.pid).length + (WORKERS - final.length);
  precondition(c.counts.ok > 0, "the client completed no request");
  const adoptedExit = await adoptedExits(port, final.slice(0, 10));
  await stop(hive.proc);
  const dieWithHive = await killedHives(base + 800);

  const a = stats(adopt);
  return {
    bench: "restart",
    runs: RUNS,
    workers: WORKERS,
    hive: HIVE_CMD.join(" "),
    adopt_ms: a,
    empty_hive_ms: stats(empty),
    graceful_stop_ms: stats(stops),
    client: { streams: CLIENT_STREAMS, requests_ok: c.counts.ok, requests_failed: c.counts.failed, errors: c.counts.errors },
    worker_restarts: restarts,
    adopted_exit_ms: adoptedExit,
    default_policy_all_gone_ms: dieWithHive,
    verdicts: {
      adopt_median_ms: verdict(a.median, TARGET_ADOPT_MS, "at most"),
      worker_restarts: { figure: restarts, target: 0, target_is: "at most", pass: restarts === 0 },
      failed_requests: { figure: c.counts.failed, target: 0, target_is: "at most", pass: c.counts.failed === 0 },
      adopted_exit_median_ms: verdict(adoptedExit.median, TARGET_ADOPTED_EXIT_MS, "at most"),
      die_with_hive_p90_ms: verdict(dieWithHive.p90, TARGET_DIE_WITH_HIVE_MS, "at most"),
    },
    pass:
      a.median <= TARGET_ADOPT_MS &&
      restarts === 0 &&
      c.counts.failed === 0 &&
      adoptedExit.median <= TARGET_ADOPTED_EXIT_MS &&
      dieWithHive.p90 <= TARGET_DIE_WITH_HIVE_MS,
  };
}

/** (d) SIGKILL each adopted worker in turn; ms until the hive's `exited` event for it. */
async function adoptedExits(port: number, workers: any[]) {
  const res = await fetch(`http://127.0.0.1:${port}/v1/events`);
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  const seen = new Map<string, number>();
  let buf = "";
  const pump = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += decoder.decode(value, { stream: true });
      let i: number;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const data = /^data: (.+)$/m.exec(buf.slice(0, i))?.[1];
        buf = buf.slice(i + 2);
        const e = data ? JSON.parse(data) : null;
        if (e?.type === "exited") seen.set(e.worker_id, performance.now());
      }
    }
  })().catch(() => {});
  const ms: number[] = [];
  for (const w of workers) {
    // Not in step with the hive's 50 ms exit watch (each kill would come right after a round).
    await Bun.sleep(Math.random() * 50);
    const t = performance.now();
    process.kill(w.pid, "SIGKILL");
    while (!seen.has(w.id)) {
      precondition(performance.now() - t < 5000, `no exited event for adopted worker ${w.id}`);
      await Bun.sleep(1);
    }
    ms.push(seen.get(w.id)! - t);
  }
  await reader.cancel();
  await pump;
  return stats(ms);
}

/** (e) Default policy: SIGKILL the hive; ms until its workers and their grandchildren are all gone. */
async function killedHives(portBase: number) {
  const ms: number[] = [];
  for (let run = 0; run < KILL_RUNS; run++) {
    const dir = tempDir("rbee-bench-restart-kill-");
    dirs.push(dir);
    const cfg = prepareDataDir(dir.path, [portBase + run * 20, portBase + run * 20 + 19]);
    const port = freePort();
    const h = startDaemon(dir.path, cfg.config, port, false, { FAKE_WORKER_GRANDCHILD: join(dir.path, "grandchild.pid") });
    await until(port, h.t0, () => true);
    for (let i = 0; i < 5; i++) {
      const res = await fetch(`http://127.0.0.1:${port}/v1/workers/spawn`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model_ref: cfg.modelRef, backend: "cpu", device: 0 }),
      });
      precondition(res.status === 200, `spawn answered ${res.status}`);
    }
    const { workers } = await until(port, h.t0, (ws) => ws.length === 5 && ws.every((w) => w.state === "idle"));
    for (const w of workers) groups.add(w.pid);
    let members: number[] = [];
    for (;;) {
      members = workers.flatMap((w) => groupMembers(w.pid));
      if (members.length === 10) break;
      await Bun.sleep(5);
    }
    const t = performance.now();
    h.proc.kill("SIGKILL");
    while (members.some(pidAlive)) {
      precondition(performance.now() - t < 10_000, "workers outlived their hive by 10 s");
      await Bun.sleep(1);
    }
    ms.push(performance.now() - t);
    hives.delete(h.proc);
    log(`kill run ${run + 1}/${KILL_RUNS}: all 10 gone in ${round(ms.at(-1)!)} ms`);
  }
  return stats(ms);
}

async function cleanup() {
  for (const h of hives) h.kill("SIGKILL");
  for (const g of groups) {
    try {
      process.kill(-g, "SIGKILL");
    } catch {
      // gone
    }
  }
  for (const d of dirs) d.cleanup();
}

await runBench("restart", body, cleanup);
