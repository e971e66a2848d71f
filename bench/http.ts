#!/usr/bin/env bun
/**
 * Request-path throughput bench: the hive against a bare `Bun.serve` answering the same bytes.
 * Prints one JSON object to stdout.
 *
 * Two server processes run side by side: the hive (the daemon as `src/main.ts` builds it: a token
 * set, JSON request log at info level to stderr, which goes to /dev/null here, monitor off) with
 * 1,000 workers in its registry, and a bare `Bun.serve` that answers `GET /v1/health` and
 * `GET /v1/workers/list` with the same JSON (read once from the hive, re-serialized per request as
 * the hive does). A load generator (`wrk -t1`, else a Bun keep-alive client; bench/load.ts) drives
 * one of them at a time with 32 keep-alive connections in short windows, alternating and rotating
 * which goes first, so both sides see the same machine. Per route: requests/s of each, CPU time of
 * each server per request (/proc/<pid>/stat), and the ratio hive / bare (median of per-round
 * ratios).
 *
 *  (a) GET /v1/health: target ≥ 0.8 × the bare server's throughput.
 *  (b) GET /v1/workers/list with 1,000 workers (~1 MB of JSON): reported.
 * Preconditions (else exit 2): both servers answer byte-identical bodies, no non-2xx answer or
 * socket error in any window.
 *
 * Usage: bun bench/http.ts [rounds=8] [window_s=1] [workers=1000] (env BENCH_CONNECTIONS, default 32)
 * Child modes: --serve-hive <port> <dataDir> <workers>, --serve-bare <port> <hiveUrl> <token>
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import { freePort, tempDir } from "../test/helpers.ts";
import { benchLog, precondition, ratio3, rotation, round, runBench, stats, type Row } from "./harness.ts";
import { cpus } from "node:os";
import { load, findWrk, pinned } from "./load.ts";

const TOKEN = "bench-http-token-0123456789abcdef";
const TARGET_HEALTH_RATIO = 0.8;
const log = benchLog("http");
/** Servers on the last CPU, the load generator on the first (when there are two or more). */
const SERVER_CPU = cpus().length >= 2 ? cpus().length - 1 : undefined;
const LOAD_CPU = cpus().length >= 2 ? 0 : undefined;
const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;

/** utime + stime of a process, in ms. */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(f[11]) + Number(f[12])) / CLK_TCK) * 1000;
}

// ------------------------------------------------------------------ child: the hive

async function serveHive(port: number, dataDir: string, workers: number): Promise<void> {
  const { loadConfig } = await import("../src/config.ts");
  const { createLogger } = await import("../src/shared/logger.ts");
  const { startHive } = await import("../src/hive.ts");
  const { toSystemTime } = await import("../src/shared/rbee-types.ts");
  // As main.ts builds the daemon: the environment's config, JSON log lines on stderr at info.
  const loaded = loadConfig({
    env: { HOME: dataDir, RBEE_DATA_DIR: dataDir, LLORCH_API_TOKEN: TOKEN },
    flags: { addr: `127.0.0.1:${port}` },
  });
  loaded.config.monitor.interval_s = 3600; // the workers below have no process to check
  loaded.config.idle.timeout_s = 0;
  const logger = createLogger({ format: "json", level: "info" });
  const hive = await startHive(loaded, logger, { echo: null });
  const now = Date.now();
  for (let i = 0; i < workers; i++) {
    const port = 20000 + i;
    hive.registry.add({
      id: `worker-bench-${String(i).padStart(4, "0")}-0000-4000-8000-000000000000`,
      url: `http://127.0.0.1:${port}`,
      model_ref: `hf:bench/Model-${i % 7}-GGUF:Q4_K_M`,
      backend: i % 3 === 0 ? "cpu" : "cuda",
      device: i % 8,
      state: "idle",
      last_activity: toSystemTime(now - i * 1000),
      slots_total: 1,
      slots_available: 1,
      failed_health_checks: 0,
      pid: null,
      restart_count: i % 3,
      last_restart: null,
      last_heartbeat: toSystemTime(now),
      phase: "running",
      port,
      profile: "llm-worker-rbee",
      model_path: `/var/lib/rbee-hive/models/models--bench--Model-${i % 7}-GGUF/snapshots/abc/model.Q4_K_M.gguf`,
      download_id: null,
      started_at: toSystemTime(now - 3_600_000),
      ready_at: toSystemTime(now - 3_500_000),
      health_status: "healthy",
      last_exit: null,
      exits: [],
      next_restart_at: null,
      crash_loop_reason: null,
      memory_estimate_bytes: 4_368_439_296,
      memory_used_bytes: 4_100_000_000,
      in_flight: 0,
      keep_alive_s: null,
      load_progress: null,
    });
  }
  hive.shutdown.installSignalHandlers();
  process.stdout.write("ready\n");
}

// ------------------------------------------------------------------ child: the bare server

async function serveBare(port: number, hiveUrl: string, token: string): Promise<void> {
  const headers = { authorization: `Bearer ${token}` };
  const health = await (await fetch(`${hiveUrl}/v1/health`)).json();
  const list = await (await fetch(`${hiveUrl}/v1/workers/list`, { headers })).json();
  Bun.serve({
    hostname: "127.0.0.1",
    port,
    fetch(req) {
      return Response.json(req.url.endsWith("/v1/health") ? health : list);
    },
  });
  process.stdout.write("ready\n");
}

// ------------------------------------------------------------------ the bench

const procs = new Set<Bun.Subprocess>();
let work: { path: string; cleanup: () => void } | undefined;

async function startChild(args: string[]): Promise<Bun.Subprocess> {
  const proc = Bun.spawn(pinned([process.execPath, import.meta.path, ...args], SERVER_CPU), { stdout: "pipe", stderr: "ignore", stdin: "ignore" });
  procs.add(proc);
  const reader = (proc.stdout as ReadableStream<Uint8Array>).getReader();
  const { value } = await reader.read();
  precondition(new TextDecoder().decode(value ?? new Uint8Array()).startsWith("ready"), `${args[0]} child started (exit ${proc.exitCode})`);
  reader.releaseLock();
  return proc;
}

async function body() {
  const rounds = Number(process.argv[2] ?? 8);
  const windowS = Number(process.argv[3] ?? 1);
  const workers = Number(process.argv[4] ?? 1000);
  const connections = Number(process.env.BENCH_CONNECTIONS ?? 32);
  work = tempDir("rbee-bench-http-");
  const hivePort = freePort();
  const barePort = freePort();
  const hive = await startChild(["--serve-hive", String(hivePort), join(work.path, "data"), String(workers)]);
  const hiveUrl = `http://127.0.0.1:${hivePort}`;
  const bare = await startChild(["--serve-bare", String(barePort), hiveUrl, TOKEN]);
  const bareUrl = `http://127.0.0.1:${barePort}`;
  const headers = { authorization: `Bearer ${TOKEN}` };
  const tool = `${findWrk() ? "wrk -t1" : "bun fetch client (wrk not installed)"}${SERVER_CPU !== undefined ? `, pinned: servers on CPU ${SERVER_CPU}, load on CPU ${LOAD_CPU}` : ""}`;
  log(`load generator: ${tool}, ${connections} connections, ${rounds} rounds of ${windowS} s per side and route`);

  const routes = [
    { name: "health", path: "/v1/health" },
    { name: "workers_list", path: "/v1/workers/list" },
  ] as const;
  const result: Record<string, unknown> = { bench: "http", load_generator: tool, connections, rounds, window_s: windowS, workers_registered: workers };
  const rows: Row[] = [];
  for (const route of routes) {
    const [a, b] = await Promise.all([fetch(hiveUrl + route.path, { headers }).then((r) => r.text()), fetch(bareUrl + route.path).then((r) => r.text())]);
    precondition(a === b, `${route.path}: the bare server answers the hive's bytes (${a.length} vs ${b.length} bytes)`);
    if (route.name === "workers_list") precondition((JSON.parse(a) as { workers: unknown[] }).workers.length === workers, `${workers} workers listed`);
    // warm-up: JIT and connection setup on both sides
    for (const url of [hiveUrl, bareUrl]) await load(url + route.path, { seconds: 1, connections, headers, cpu: LOAD_CPU });
    const side = { hive: { rps: [] as number[], cpu_us: [] as number[] }, bare: { rps: [] as number[], cpu_us: [] as number[] } };
    const ratios: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const got: Record<string, number> = {};
      for (const s of rotation(i, ["bare", "hive"] as const)) {
        const pid = s === "hive" ? hive.pid : bare.pid;
        const c0 = cpuMs(pid);
        const r = await load((s === "hive" ? hiveUrl : bareUrl) + route.path, { seconds: windowS, connections, headers, cpu: LOAD_CPU });
        const cpu = cpuMs(pid) - c0;
        precondition(r.errors === 0, `${s} ${route.path}: no failed request in a window (${r.errors} failed)`);
        precondition(r.requests > 0, `${s} ${route.path}: requests were answered`);
        side[s].rps.push(r.rps);
        side[s].cpu_us.push((cpu * 1000) / r.requests);
        got[s] = r.rps;
      }
      ratios.push(got.hive! / got.bare!);
    }
    const ratio = stats(ratios).median;
    const judged = route.name === "health";
    const pass = judged ? ratio >= TARGET_HEALTH_RATIO : null;
    result[route.name] = {
      path: route.path,
      body_bytes: a.length,
      hive_rps: stats(side.hive.rps),
      bare_rps: stats(side.bare.rps),
      hive_cpu_us_per_request: stats(side.hive.cpu_us),
      bare_cpu_us_per_request: stats(side.bare.cpu_us),
      ratio_per_round: ratios.map((x) => Math.round(x * 1000) / 1000),
      ratio_median: Math.round(ratio * 1000) / 1000,
      target: judged ? TARGET_HEALTH_RATIO : null,
      pass,
    };
    rows.push({
      name: `GET ${route.path}${route.name === "workers_list" ? ` (${workers} workers)` : ""}: throughput`,
      figure: round(stats(side.hive.rps).median),
      baseline: round(stats(side.bare.rps).median),
      unit: "req/s",
      ratio: Math.round(ratio * 1000) / 1000,
      target: judged ? `≥ ${TARGET_HEALTH_RATIO}× bare Bun.serve` : null,
      pass,
      note: `server CPU per request ${stats(side.hive.cpu_us).median} µs vs ${stats(side.bare.cpu_us).median} µs (${ratio3(stats(side.hive.cpu_us).median, stats(side.bare.cpu_us).median)}×); ${tool}. Per request the hive also routes through Elysia (auth, deadline and body-limit hooks, response schema), records the request-duration metric, sets a correlation id and writes a JSON request log line (for a successful health poll a debug line, not written at info); the bare server does none of it (README "Benchmarks" has the cost of each)`,
    });
    log(`${route.path}: hive ${round(stats(side.hive.rps).median)} req/s, bare ${round(stats(side.bare.rps).median)} req/s, ratio ${round(ratio)}`);
  }
  return { ...result, rows, pass: rows.every((r) => r.pass !== false) };
}

async function cleanup() {
  for (const p of procs) p.kill("SIGKILL");
  await Promise.all([...procs].map((p) => p.exited));
  work?.cleanup();
}

const mode = process.argv[2];
if (mode === "--serve-hive") await serveHive(Number(process.argv[3]), process.argv[4]!, Number(process.argv[5]));
else if (mode === "--serve-bare") await serveBare(Number(process.argv[3]), process.argv[4]!, process.argv[5]!);
else await runBench("http", body, cleanup);
