#!/usr/bin/env bun
/**
 * Compiled-binary bench: the release binary for this host (scripts/build.ts --host, or
 * BENCH_HIVE_BIN) against a compiled bare `Bun.serve` that answers the same health body, built
 * the same way (`--compile --minify --bytecode`). Prints one JSON object to stdout.
 *
 *  (a) process start → first 200 from `GET /v1/health` (polled every 2 ms), fresh data dir per
 *      run, the two interleaved with the order rotating. Reported (ratio to bare).
 *  (b) RSS (VmRSS) once health answers, after a 10,000-request warm-up and after each further
 *      10,000 up to 100,000 (16 at a time over keep-alive; the hive: health, workers list, one
 *      worker's record, a 404 and a 401 in turn; bare: its health). RSS swings by several MiB with
 *      the garbage collector, so growth = lowest of the last three readings − lowest of the first
 *      three after the warm-up. Target: no growth beyond noise, ≤ the bare server's + 4 MiB.
 *
 * Usage: bun bench/binary.ts [runs=5]   (env BENCH_HIVE_BIN: use this binary instead of building;
 * BENCH_BATCHES: batches of 10,000 after the warm-up, default 9)
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { freePort, tempDir } from "../test/helpers.ts";
import { prepareDataDir } from "../test/fixtures/hive-process.ts";
import { benchLog, precondition, ratio3, rotation, round, runBench, stats, type Row } from "./harness.ts";

const RUNS = Number(process.argv[2] ?? 5);
const ROOT = join(import.meta.dir, "..");
const TOKEN = "bench-binary-token-0123456789abcdef";
const NOISE_MIB = 4;
/** Requests between RSS readings: a warm-up batch, then BENCH_BATCHES more (default 9 of 10,000). */
const WARMUP_REQUESTS = 10_000;
const BATCHES = [WARMUP_REQUESTS, ...Array.from({ length: Number(process.env.BENCH_BATCHES ?? 9) }, () => 10_000)];
const log = benchLog("binary");
const MiB = 1024 * 1024;

const procs = new Set<Bun.Subprocess>();
const dirs: Array<{ path: string; cleanup: () => void }> = [];

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) * 1024 : NaN;
}

async function build(work: string): Promise<{ hive: string; bare: string; buildS: number }> {
  const t0 = performance.now();
  let hive = process.env.BENCH_HIVE_BIN;
  if (!hive) {
    log("building the host binary (scripts/build.ts --host --skip-smoke)");
    const b = Bun.spawn([process.execPath, join(ROOT, "scripts/build.ts"), "--host", "--skip-smoke", "--outdir", work], { cwd: ROOT, stdout: "ignore", stderr: "inherit" });
    precondition((await b.exited) === 0, "the host binary was built");
    hive = join(work, `rbee-hive-${process.platform}-${process.arch}`);
  }
  const src = join(work, "bare.ts");
  const { VERSION } = await import("../src/version.ts");
  writeFileSync(
    src,
    `const body = ${JSON.stringify({ status: "alive", version: VERSION, api_version: "v1", catalog: "ok" })};
const port = Number(process.argv[process.argv.indexOf("--port") + 1]);
Bun.serve({ hostname: "127.0.0.1", port, fetch: () => Response.json(body) });
`,
  );
  const bare = join(work, "bare-server");
  const b = Bun.spawn([process.execPath, "build", "--compile", "--minify", "--bytecode", src, "--outfile", bare], { cwd: work, stdout: "ignore", stderr: "inherit" });
  precondition((await b.exited) === 0, "the bare server was built");
  return { hive, bare, buildS: Math.round((performance.now() - t0) / 100) / 10 };
}

async function start(kind: "hive" | "bare", bin: string): Promise<{ proc: Bun.Subprocess; port: number; ms: number; dir?: { path: string; cleanup: () => void } }> {
  const port = freePort();
  let argv: string[];
  let env: Record<string, string | undefined> = { ...process.env };
  let dir: { path: string; cleanup: () => void } | undefined;
  if (kind === "hive") {
    dir = tempDir("rbee-bench-binary-");
    dirs.push(dir);
    const { config } = prepareDataDir(dir.path, [41000, 41100]);
    argv = [bin, "daemon", "--addr", `127.0.0.1:${port}`, "--log-format", "json"];
    env = { ...env, RBEE_DATA_DIR: dir.path, RBEE_CONFIG: config, LLORCH_API_TOKEN: TOKEN, RBEE_LOG: "info" };
  } else argv = [bin, "--port", String(port)];
  const t0 = performance.now();
  const proc = Bun.spawn(argv, { env, stdin: "ignore", stdout: "ignore", stderr: "ignore", cwd: "/" });
  procs.add(proc);
  for (;;) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/v1/health`);
      await res.arrayBuffer();
      if (res.status === 200) break;
    } catch {
      // not listening yet
    }
    precondition(proc.exitCode === null, `${kind} started (exit ${proc.exitCode})`);
    precondition(performance.now() - t0 < 20_000, `${kind} answered /v1/health within 20 s`);
    await Bun.sleep(2);
  }
  return { proc, port, ms: performance.now() - t0, dir };
}

async function stop(p: Bun.Subprocess): Promise<void> {
  p.kill("SIGTERM");
  await p.exited;
  procs.delete(p);
}

/** `n` requests, 16 at a time, over keep-alive; every answer must have the expected status. */
async function drive(kind: "hive" | "bare", port: number, n: number): Promise<void> {
  const base = `http://127.0.0.1:${port}`;
  const auth = { authorization: `Bearer ${TOKEN}` };
  const plan: Array<[string, Record<string, string>, number]> =
    kind === "hive"
      ? [
          ["/v1/health", {}, 200],
          ["/v1/workers/list", auth, 200],
          ["/v1/workers/worker-nobody", auth, 404],
          ["/v1/nothing-here", auth, 404],
          ["/v1/workers/list", {}, 401],
        ]
      : [["/v1/health", {}, 200]];
  let next = 0;
  let bad = 0;
  const loop = async () => {
    for (let i = next++; i < n; i = next++) {
      const [path, headers, status] = plan[i % plan.length]!;
      const res = await fetch(base + path, { headers });
      await res.arrayBuffer();
      if (res.status !== status) bad++;
    }
  };
  await Promise.all(Array.from({ length: 16 }, loop));
  precondition(bad === 0, `${kind}: every answer had its expected status (${bad} did not)`);
}

async function body() {
  const work = tempDir("rbee-bench-binary-build-");
  dirs.push(work);
  const { hive, bare, buildS } = await build(work.path);
  log(`binaries ready in ${buildS} s; ${RUNS} start-up runs each, interleaved`);
  const startMs: Record<"hive" | "bare", number[]> = { hive: [], bare: [] };
  for (let i = 0; i < RUNS; i++) {
    for (const kind of rotation(i, ["bare", "hive"] as const)) {
      const s = await start(kind, kind === "hive" ? hive : bare);
      startMs[kind].push(s.ms);
      await stop(s.proc);
      s.dir?.cleanup();
    }
  }
  // Memory: one long-lived process of each, driven alternately.
  const h = await start("hive", hive);
  const b = await start("bare", bare);
  await Bun.sleep(200);
  const rss = { hive: [rssBytes(h.proc.pid)], bare: [rssBytes(b.proc.pid)] };
  for (const n of BATCHES) {
    await drive("hive", h.port, n);
    await drive("bare", b.port, n);
    await Bun.sleep(200);
    rss.hive.push(rssBytes(h.proc.pid));
    rss.bare.push(rssBytes(b.proc.pid));
  }
  await stop(h.proc);
  await stop(b.proc);
  const mib = (x: number) => Math.round((x / MiB) * 10) / 10;
  // RSS swings by several MiB with the garbage collector; its floor does not, unless memory leaks:
  // growth = lowest of the last three readings − lowest of the first three after the warm-up.
  const growth = (xs: number[]) => Math.min(...xs.slice(-3)) - Math.min(...xs.slice(1, 4));
  const hiveGrowth = growth(rss.hive);
  const bareGrowth = growth(rss.bare);
  const memPass = hiveGrowth <= bareGrowth + NOISE_MIB * MiB;
  const hs = stats(startMs.hive);
  const bs = stats(startMs.bare);
  const rows: Row[] = [
    {
      name: "compiled binary: process start → /v1/health answers",
      figure: hs.median,
      baseline: bs.median,
      unit: "ms",
      ratio: ratio3(hs.median, bs.median),
      target: null,
      pass: null,
      note: `median of ${RUNS} (p90 ${hs.p90} vs ${bs.p90} ms); baseline: a compiled bare Bun.serve built the same way`,
    },
    {
      name: "compiled binary: RSS after start",
      figure: mib(rss.hive[0]!),
      baseline: mib(rss.bare[0]!),
      unit: "MiB",
      ratio: ratio3(rss.hive[0]!, rss.bare[0]!),
      target: null,
      pass: null,
    },
    {
      name: `compiled binary: RSS growth over ${(BATCHES.reduce((a, x) => a + x, 0) - WARMUP_REQUESTS).toLocaleString("en")} requests after a ${WARMUP_REQUESTS.toLocaleString("en")}-request warm-up (floor of the last 3 readings − floor of the first 3)`,
      figure: mib(hiveGrowth),
      baseline: mib(bareGrowth),
      unit: "MiB",
      ratio: null,
      target: `≤ bare + ${NOISE_MIB} MiB`,
      pass: memPass,
      note: `RSS after ${[0, ...BATCHES.map((_, i) => BATCHES.slice(0, i + 1).reduce((a, x) => a + x, 0))].map((n) => `${n / 1000}k`).join("/")} requests: hive ${rss.hive.map(mib).join(" / ")} MiB, bare ${rss.bare.map(mib).join(" / ")} MiB`,
    },
  ];
  return {
    bench: "binary",
    binary: process.env.BENCH_HIVE_BIN ?? "built: scripts/build.ts --host",
    build_s: buildS,
    start_ms: { hive: hs, bare: bs },
    rss_mib: { hive: rss.hive.map(mib), bare: rss.bare.map(mib), after_requests: [0, ...BATCHES.map((_, i) => BATCHES.slice(0, i + 1).reduce((a, x) => a + x, 0))] },
    rows,
    pass: memPass,
  };
}

async function cleanup() {
  for (const p of procs) p.kill("SIGKILL");
  await Promise.all([...procs].map((p) => p.exited));
  for (const d of dirs) d.cleanup();
}

await runBench("binary", body, cleanup);
