#!/usr/bin/env bun
/**
 * Recovery and monitor-cost bench (fake worker). Prints one JSON object to stdout.
 *
 *  (a) restart latency: SIGKILL a ready worker → `ready` again (same worker_id, restart_count + 1),
 *      in-process hive, restart enabled with no backoff. Target: median ≤ 50 ms. Baseline, in the
 *      same runs with the order alternating: SIGKILL a directly started worker and start a new one
 *      directly until its GET /health answers 200 (what any restart must at least cost).
 *  (b) monitor cost: two real daemons (`src/main.ts daemon`, own processes) with the same number of
 *      idle fake workers, one with [monitor] interval_s = 1, the baseline with interval_s = 3600,
 *      running at the same time and measured over the same windows (utime+stime from
 *      /proc/<pid>/stat; the reading order alternates), so both see the same machine. The figure is
 *      the difference, what the monitor costs, as % of one core. Target < 5 %. Then both daemons get
 *      SIGTERM and none of their workers may be left.
 * Pass/fail comes from each figure's ratio to its target; a run that cannot measure (a worker that
 * is not idle, a daemon that does not stop, a worker left behind) is a failed run (exit 2).
 *
 * Usage: bun bench/recovery.ts [kills=30] [workers=100] [window_s=30]
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { FAKE_WORKER, MAIN, freePort, startTestHive, tempDir, type TestHive } from "../test/helpers.ts";
import { tinyLlamaSpec, writeGguf } from "../test/fixtures/gguf-writer.ts";
import { benchLog, precondition, rotation, round, runBench, stats, verdict } from "./harness.ts";

const KILLS = Number(process.argv[2] ?? 30);
const WORKERS = Number(process.argv[3] ?? 100);
const WINDOW_S = Number(process.argv[4] ?? 30);
const WINDOWS = 6;
const TARGET_RESTART_MS = 50;
const TARGET_MONITOR_PCT = 5;

const log = benchLog("recovery");
const now = () => performance.now();

async function until<T>(fn: () => T | undefined | Promise<T | undefined>, what: string, timeoutMs = 10_000, everyMs = 1): Promise<T> {
  const deadline = now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(everyMs);
  }
}

/** Pids of fake workers whose command line mentions `marker` (our temp dir), so other people's are never touched. */
function fakeWorkers(marker: string): number[] {
  try {
    const out = execFileSync("pgrep", ["-f", "fake-worker"], { encoding: "utf8" });
    return out.split("\n").filter(Boolean).map(Number).filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(marker);
      } catch {
        return false;
      }
    });
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
}

/** SIGKILL each pid's whole process group (every worker leads its own). */
function killGroups(pids: Iterable<number>): void {
  for (const pid of pids) {
    try {
      process.kill(-pid, "SIGKILL");
    } catch {
      /* gone */
    }
  }
}

// ------------------------------------------------------------------ (a) restart latency

const directProcs = new Set<Bun.Subprocess>();

/** A direct worker started until its /health answers 200; `callbacks` gets its ready callback. */
async function startDirect(callbackPort: number, id: string, callbacks: Set<string>) {
  const port = freePort();
  const proc = Bun.spawn(
    [FAKE_WORKER, "--worker-id", id, "--model", "/models/m.gguf", "--model-ref", "file:/models/m.gguf", "--backend", "cpu",
      "--device", "0", "--port", String(port), "--callback-url", `http://127.0.0.1:${callbackPort}/v1/workers/ready`],
    { stdin: "ignore", stdout: "ignore", stderr: "ignore" },
  );
  directProcs.add(proc);
  await until(() => (callbacks.has(id) ? true : undefined), `callback of ${id}`);
  await until(
    () => fetch(`http://127.0.0.1:${port}/health`).then(async (r) => (await r.arrayBuffer(), r.status === 200 ? true : undefined), () => undefined),
    `${id} healthy`,
  );
  return proc;
}

async function restartLatency(state: { hive?: TestHive }) {
  const callbacks = new Set<string>();
  const receiver = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      if (new URL(req.url).pathname === "/v1/workers/ready") callbacks.add(((await req.json()) as { worker_id: string }).worker_id);
      return new Response("ok");
    },
  });
  const h = await startTestHive({
    config: {
      restart: { enabled: true, base_backoff_s: 0, jitter: 0, max_attempts: 1000, window_s: 1, breaker_failures: 1000, breaker_window_s: 1 },
    },
  });
  state.hive = h;
  try {
    const seen = new Map<string, number>(); // `${type}:${restart_count}` → performance.now()
    let restartCount = 0;
    h.bus.subscribe((e) => {
      const t = now();
      if (e.type === "exited") seen.set(`exited:${restartCount}`, t);
      else seen.set(`${e.type}:${"restart_count" in e.data ? e.data.restart_count : restartCount}`, t);
    });
    const { worker_id: id } = await h.spawn();
    await until(() => seen.get("ready:0"), "first ready");

    const hiveKill = async () => {
      const pid = h.registry.live(id)?.pid;
      precondition(pid, "the ready worker has a pid");
      const before = restartCount++; // the exit event below is recorded under the new count
      const tKill = now();
      process.kill(pid, "SIGKILL");
      const tReady = await until(() => seen.get(`ready:${before + 1}`), `ready after kill ${before + 1}`);
      const w = h.registry.live(id);
      precondition(w?.restart_count === before + 1 && w.state === "idle", `worker idle with restart_count ${before + 1}: ${JSON.stringify(w)}`);
      return {
        total: tReady - tKill,
        toExited: seen.get(`exited:${before + 1}`)! - tKill,
        exitedToSpawned: seen.get(`spawned:${before + 1}`)! - seen.get(`exited:${before + 1}`)!,
        spawnedToReady: tReady - seen.get(`spawned:${before + 1}`)!,
      };
    };
    let direct = await startDirect(receiver.port!, "direct-0", callbacks);
    const directKill = async (i: number) => {
      const tKill = now();
      direct.kill("SIGKILL");
      await direct.exited;
      directProcs.delete(direct);
      direct = await startDirect(receiver.port!, `direct-${i + 1}`, callbacks);
      return now() - tKill;
    };

    const runs: Array<{ total: number; toExited: number; exitedToSpawned: number; spawnedToReady: number }> = [];
    const baseline: number[] = [];
    const WARMUP = 2;
    for (let i = 0; i < WARMUP + KILLS; i++) {
      let hr: Awaited<ReturnType<typeof hiveKill>> | undefined;
      let dr: number | undefined;
      for (const side of rotation(i, ["hive", "direct"] as const)) {
        if (side === "hive") hr = await hiveKill();
        else dr = await directKill(i);
      }
      precondition(hr && dr !== undefined, `run ${i} measured both sides`);
      if (i >= WARMUP) {
        runs.push(hr);
        baseline.push(dr);
      }
    }
    const med = (f: (r: (typeof runs)[number]) => number) => stats(runs.map(f)).median;
    const s = stats(runs.map((r) => r.total));
    const v = verdict(s.median, TARGET_RESTART_MS, "at most");
    return {
      kill_to_idle: { ...s, warmup_kills: WARMUP, target_median_ms: TARGET_RESTART_MS, verdict: v, pass: v.pass },
      direct_kill_and_start_baseline: stats(baseline),
      overhead_median: round(s.median - stats(baseline).median),
      breakdown_median: { kill_to_exited: med((r) => r.toExited), exited_to_spawned: med((r) => r.exitedToSpawned), spawned_to_ready: med((r) => r.spawnedToReady) },
    };
  } finally {
    for (const p of directProcs) p.kill("SIGKILL");
    directProcs.clear();
    receiver.stop(true);
    await h.close();
    state.hive = undefined;
  }
}

// ------------------------------------------------------------------ (b) monitor cost

const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;

/** utime + stime of a process, in clock ticks (all threads). */
function cpuTicks(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // fields[0] is field 3 (state)
  return Number(fields[11]) + Number(fields[12]); // fields 14 and 15
}

interface Daemon {
  proc: Bun.Subprocess;
  url: string;
  dir: string;
  intervalS: number;
  workerPids: Set<number>;
}

async function startDaemon(root: string, intervalS: number, portMin: number): Promise<Daemon> {
  const dir = join(root, `monitor-${intervalS}`);
  mkdirSync(join(dir, "models"), { recursive: true });
  writeGguf(join(dir, "models/m.gguf"), tinyLlamaSpec());
  const port = freePort();
  const config = join(dir, "hive.toml");
  // The fake worker takes next to nothing: no 1 GiB overhead per worker, no RAM kept back (100 workers fit).
  writeFileSync(config, `[monitor]\ninterval_s = ${intervalS}\n\n[workers]\nport_min = ${portMin}\nport_max = ${portMin + 1000}\n\n[resources]\noverhead_mb = 0\nram_reserve_mb = 0\n`);
  const proc = Bun.spawn([process.execPath, MAIN, "daemon", "--addr", `127.0.0.1:${port}`], {
    env: { ...process.env, RBEE_DATA_DIR: dir, RBEE_WORKER_BINARY: FAKE_WORKER, RBEE_SILENT: "1", RBEE_CONFIG: config, LLORCH_API_TOKEN: "" },
    stdin: "ignore",
    stdout: Bun.file(join(dir, "daemon.log")),
    stderr: Bun.file(join(dir, "daemon.err")),
  });
  const url = `http://127.0.0.1:${port}`;
  await until(
    async () => {
      if (proc.exitCode !== null) throw new Error(`daemon exited with ${proc.exitCode}; see ${dir}/daemon.err`);
      return fetch(`${url}/v1/workers/list`).then((r) => (r.ok ? true : undefined), () => undefined);
    },
    "daemon to listen",
    15_000,
    20,
  );
  return { proc, url, dir, intervalS, workerPids: new Set() };
}

async function listWorkers(d: Daemon): Promise<Array<{ id: string; state: string; pid: number | null }>> {
  return ((await (await fetch(`${d.url}/v1/workers/list`)).json()) as { workers: Array<{ id: string; state: string; pid: number | null }> }).workers;
}

async function spawnWorkers(d: Daemon, n: number): Promise<void> {
  const body = JSON.stringify({ model_ref: `file:${join(d.dir, "models/m.gguf")}`, backend: "cpu", device: 0 });
  let next = 0;
  const one = async () => {
    while (next++ < n) {
      const res = await fetch(`${d.url}/v1/workers/spawn`, { method: "POST", headers: { "content-type": "application/json" }, body });
      if (res.status !== 200) throw new Error(`spawn failed: ${res.status} ${await res.text()}`);
      await res.arrayBuffer();
    }
  };
  await Promise.all(Array.from({ length: 8 }, one)); // 8 spawns in flight at a time
  const ws = await until(
    async () => {
      const ws = await listWorkers(d);
      return ws.length === n && ws.every((w) => w.state === "idle") ? ws : undefined;
    },
    `${n} idle workers`,
    120_000,
    250,
  );
  for (const w of ws) if (w.pid) d.workerPids.add(w.pid);
}

/** SIGTERM the daemon (it stops its workers) and wait for it; true when it exited 0 within the bound. */
async function stopDaemon(d: Daemon): Promise<boolean> {
  d.proc.kill("SIGTERM");
  const code = await Promise.race([d.proc.exited, Bun.sleep(40_000).then(() => "timeout" as const)]);
  if (code === "timeout") d.proc.kill("SIGKILL");
  await d.proc.exited;
  return code === 0;
}

async function monitorCost(root: string, daemons: Set<Daemon>) {
  const portBase = 20000 + Math.floor(Math.random() * 20000);
  const withMonitor = await startDaemon(root, 1, portBase);
  daemons.add(withMonitor);
  const baseline = await startDaemon(root, 3600, portBase + 2000);
  daemons.add(baseline);
  for (const d of [withMonitor, baseline]) {
    const t0 = now();
    await spawnWorkers(d, WORKERS);
    log(`interval_s = ${d.intervalS}: ${WORKERS} workers idle after ${Math.round(now() - t0)} ms`);
  }
  log(`settling 3 s, then measuring both daemons over ${WINDOWS} windows of ${WINDOW_S / WINDOWS} s`);
  await Bun.sleep(3000);
  const pair = [withMonitor, baseline] as const;
  const read = (i: number) => {
    const t: Record<number, number> = {};
    for (const d of rotation(i, pair)) t[d.intervalS] = cpuTicks(d.proc.pid);
    return { t, at: now() };
  };
  const windows: Array<{ with_pct: number; baseline_pct: number; cost_pct: number }> = [];
  let prev = read(0);
  const first = prev;
  for (let i = 1; i <= WINDOWS; i++) {
    await Bun.sleep((WINDOW_S * 1000) / WINDOWS);
    const cur = read(i);
    const wallS = (cur.at - prev.at) / 1000;
    const pct = (d: Daemon) => ((cur.t[d.intervalS]! - prev.t[d.intervalS]!) / CLK_TCK / wallS) * 100;
    windows.push({ with_pct: round(pct(withMonitor)), baseline_pct: round(pct(baseline)), cost_pct: round(pct(withMonitor) - pct(baseline)) });
    prev = cur;
  }
  const wallS = (prev.at - first.at) / 1000;
  const total = (d: Daemon) => ((prev.t[d.intervalS]! - first.t[d.intervalS]!) / CLK_TCK / wallS) * 100;
  const idleAtEnd = await Promise.all(pair.map(async (d) => (await listWorkers(d)).filter((w) => w.state === "idle").length));
  precondition(idleAtEnd.every((n) => n === WORKERS), `all ${WORKERS} workers of both daemons idle to the end (idle: ${idleAtEnd.join(", ")})`);
  const stopped = await Promise.all(pair.map((d) => stopDaemon(d)));
  for (const d of pair) daemons.delete(d);
  const left = fakeWorkers(root);
  killGroups(left);
  precondition(stopped.every(Boolean), `both daemons exit 0 on SIGTERM (${stopped.join(", ")})`);
  precondition(left.length === 0, `no worker left after SIGTERM (left: ${left.join(", ")})`);
  const cost = total(withMonitor) - total(baseline);
  const v = verdict(cost, TARGET_MONITOR_PCT, "at most");
  return {
    clk_tck: CLK_TCK,
    workers_per_daemon: WORKERS,
    window_s: round(wallS),
    with_monitor_pct_one_core: round(total(withMonitor)),
    baseline_pct_one_core: round(total(baseline)),
    monitor_cost_pct_one_core: round(cost),
    windows,
    target_pct: TARGET_MONITOR_PCT,
    verdict: v,
    pass: v.pass,
  };
}

// ------------------------------------------------------------------ main

const state: { hive?: TestHive } = {};
const daemons = new Set<Daemon>();
const tmp = tempDir("rbee-bench-");

async function cleanup() {
  for (const p of directProcs) p.kill("SIGKILL");
  await state.hive?.close().catch(() => {});
  for (const d of daemons) {
    d.proc.kill("SIGKILL");
    killGroups(d.workerPids);
  }
  // A daemon killed before it listed its workers: find them by our temp dir in their command line.
  killGroups(fakeWorkers(tmp.path));
  tmp.cleanup();
}

await runBench("recovery", async () => {
  log(`(a) ${KILLS} SIGKILLs of one worker, restart with zero backoff, interleaved with a direct kill-and-start`);
  const restart = await restartLatency(state);
  log(`(a) median kill → idle ${restart.kill_to_idle.median} ms (direct ${restart.direct_kill_and_start_baseline.median} ms)`);

  const monitor = await monitorCost(tmp.path, daemons);
  log(`(b) monitor every 1 s costs ${monitor.monitor_cost_pct_one_core} % of one core (${monitor.with_monitor_pct_one_core} vs ${monitor.baseline_pct_one_core})`);

  return { bench: "recovery", restart, monitor_cost: monitor, pass: restart.kill_to_idle.pass && monitor.pass };
}, cleanup);
