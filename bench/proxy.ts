#!/usr/bin/env bun
/**
 * Pass-through bench: what the hive in the data path costs a streamed answer. Prints one JSON
 * object to stdout.
 *
 * A real daemon (`src/main.ts daemon`, its own process, so its CPU can be read from /proc) spawns
 * the workers; 64 clients in this process stream answers either straight from the worker (direct)
 * or through the hive (`POST /v1/workers/{id}/inference`, or `…/proxy/…` for llama-server). Each
 * client starts at its own offset within one request's time (the same offsets for both sides of a
 * run) and then sends BENCH_REQUESTS_PER_CLIENT (3) requests back to back: a closed loop of 64
 * concurrent streams. The two sides run interleaved in the same process, the order rotating each
 * run, after one warm-up burst each (all 64 at once; its time to first token is reported too).
 * Both sides send the Bearer token (the worker checks it as well).
 *
 *  (a) judged: the fake worker streaming 256 tokens per request, paced at BENCH_TOKEN_MS (default
 *      10 ms, 100 tokens/s per stream, a GPU-like rate), 64 slots. Targets: throughput (tokens/s of
 *      a run) through the hive ≥ 0.95 × direct (median of the per-run ratios); added median time to
 *      first token (hive − direct, over every request of every run) < 2 ms.
 *  (b) reported: the same fake worker unpaced (tokens as fast as it can write them): the hive's
 *      share of a CPU-bound machine.
 *  (c) reported: the real llama.cpp `llama-server` (../shared/realworker, CPU, `--parallel 4`,
 *      `slots = "props"`), 64 clients streaming `/v1/chat/completions` (BENCH_LLAMA_TOKENS tokens,
 *      default 32); through the hive requests beyond its 4 slots wait in the hive's queue, direct
 *      they wait in llama-server's. Skipped when the binary is absent.
 * Every figure also gives the hive's CPU time per streamed token (utime+stime of the daemon during
 * the hive batches minus during the direct ones, over the tokens of the hive batches).
 * A run where a request fails or brings fewer tokens than asked is a failed run (exit 2).
 *
 * Usage: bun bench/proxy.ts [runs=3] [clients=64] [tokens=256]
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { FAKE_WORKER, MAIN, ROOT, freePort, tempDir } from "../test/helpers.ts";
import { tinyLlamaSpec, writeGguf } from "../test/fixtures/gguf-writer.ts";
import { benchLog, precondition, rotation, round, runBench, stats, verdict } from "./harness.ts";

const RUNS = Number(process.argv[2] ?? 3);
const PER_CLIENT = Number(process.env.BENCH_REQUESTS_PER_CLIENT ?? 3);
const CLIENTS = Number(process.argv[3] ?? 64);
const TOKENS = Number(process.argv[4] ?? 256);
const TOKEN_MS = Number(process.env.BENCH_TOKEN_MS ?? 10);
const LLAMA_TOKENS = Number(process.env.BENCH_LLAMA_TOKENS ?? 32);
const TARGET_RATIO = 0.95;
const TARGET_TTFT_MS = 2;
const TOKEN = "bench-proxy-token-0123456789";
const REALWORKER = join(ROOT, "../shared/realworker");
const LLAMA_SERVER = join(REALWORKER, "llama-server");
/** No single streamed request of these runs takes more than a few seconds. */
const STREAM_TIMEOUT_MS = 60_000;
const LLAMA_MODEL = join(REALWORKER, "tiny-random.Q8_0.gguf");

const log = benchLog("proxy");
const now = () => performance.now();
const CLK_TCK = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;

/** utime + stime of a process, in ms. */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(f[11]) + Number(f[12])) / CLK_TCK) * 1000;
}

async function until<T>(fn: () => T | undefined | Promise<T | undefined>, what: string, timeoutMs = 20_000): Promise<T> {
  const deadline = now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(20);
  }
}

// ------------------------------------------------------------------ the daemon and its workers

interface Daemon {
  proc: Bun.Subprocess;
  url: string;
  dir: string;
}

const auth = { authorization: `Bearer ${TOKEN}` };

async function startDaemon(dir: string): Promise<Daemon> {
  mkdirSync(join(dir, "models"), { recursive: true });
  writeGguf(join(dir, "models/m.gguf"), tinyLlamaSpec());
  const port = freePort();
  const portMin = 20000 + Math.floor(Math.random() * 20000);
  const fake = (env: string) => `slots = ${CLIENTS}\nenv = { ${env} }\n`;
  const config = [
    `[workers]\nport_min = ${portMin}\nport_max = ${portMin + 100}\nqueue_max = ${CLIENTS * 4}\nqueue_timeout_s = 600\n`,
    `[workers.profiles.paced]\n${fake(`FAKE_WORKER_TOKENS = "${TOKENS}", FAKE_WORKER_TOKEN_MS = "${TOKEN_MS}"`)}`,
    `[workers.profiles.unpaced]\n${fake(`FAKE_WORKER_TOKENS = "${TOKENS}"`)}`,
    `[workers.profiles.llama]\nbinary = ${JSON.stringify(LLAMA_SERVER)}\n` +
      `args = ["--model", "{model_path}", "--host", "127.0.0.1", "--port", "{port}", "--n-gpu-layers", "999", "--parallel", "4"]\n` +
      `readiness = "http"\nhealthy_status = ["ok"]\nbackends = ["cpu"]\nslots = "props"\ninference_path = "/completion"\nprogress_path = ""\n`,
    `[paths]\nallowed_model_roots = [${JSON.stringify(REALWORKER)}]\n`,
    `[idle]\ntimeout_s = 0\n`,
    `[monitor]\ninterval_s = 3600\n`,
    `[resources]\noverhead_mb = 0\nram_reserve_mb = 0\n`,
  ].join("\n");
  writeFileSync(join(dir, "hive.toml"), config);
  const proc = Bun.spawn([process.execPath, MAIN, "daemon", "--addr", `127.0.0.1:${port}`], {
    env: { ...process.env, RBEE_DATA_DIR: dir, RBEE_WORKER_BINARY: FAKE_WORKER, RBEE_SILENT: "1", RBEE_CONFIG: join(dir, "hive.toml"), RBEE_LOG: "warn", LLORCH_API_TOKEN: TOKEN },
    stdin: "ignore",
    stdout: Bun.file(join(dir, "daemon.log")),
    stderr: Bun.file(join(dir, "daemon.err")),
  });
  const url = `http://127.0.0.1:${port}`;
  await until(async () => {
    if (proc.exitCode !== null) throw new Error(`daemon exited with ${proc.exitCode}; see ${dir}/daemon.err`);
    return fetch(`${url}/v1/health`).then((r) => (r.ok ? true : undefined), () => undefined);
  }, "the daemon to listen");
  return { proc, url, dir };
}

async function spawnWorker(d: Daemon, profile: string, modelPath: string): Promise<{ id: string; url: string; pid: number; slots: number }> {
  const res = await fetch(`${d.url}/v1/workers/spawn`, {
    method: "POST",
    headers: { ...auth, "content-type": "application/json" },
    body: JSON.stringify({ model_ref: `file:${modelPath}`, backend: "cpu", device: 0, profile }),
  });
  if (res.status !== 200) precondition(false, `spawn of a ${profile} worker: ${res.status} ${await res.text()}`);
  const { worker_id } = (await res.json()) as { worker_id: string };
  const w = await until(async () => {
    const r = (await (await fetch(`${d.url}/v1/workers/${worker_id}`, { headers: auth })).json()) as any;
    precondition(r.phase !== "crash_loop" && r.phase !== "exited", `${profile} worker failed: ${JSON.stringify(r.last_exit)}`);
    return r.state === "idle" ? r : undefined;
  }, `${profile} worker idle`);
  return { id: worker_id, url: w.url, pid: w.pid, slots: w.slots_total };
}

// ------------------------------------------------------------------ clients

interface Stream {
  ttftMs: number;
  tokens: number;
}

/** One streamed request: time to the first token, and the tokens counted by `marker`. */
async function stream(url: string, body: string, marker: string): Promise<Stream> {
  const t0 = now();
  // A new connection per request on both sides: llama-server resets kept-alive ones now and then.
  // A hang guard: once a direct llama-server request's body never ended after its socket closed
  // (Bun's client); a run must fail with the URL, not wait forever.
  const res = await fetch(url, { method: "POST", headers: { ...auth, "content-type": "application/json" }, body, keepalive: false, signal: AbortSignal.timeout(STREAM_TIMEOUT_MS) });
  if (res.status !== 200) throw new Error(`${url}: ${res.status} ${await res.text()}`);
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let ttftMs = -1;
  let tokens = 0;
  let carry = "";
  for (;;) {
    const { done, value } = await reader.read().catch((e: Error) => {
      throw new Error(`${url}: the stream failed after ${tokens} tokens: ${e.name} ${e.message}`);
    });
    if (done) break;
    const text = carry + decoder.decode(value, { stream: true });
    for (let i = text.indexOf(marker); i >= 0; i = text.indexOf(marker, i + marker.length)) tokens++;
    if (ttftMs < 0 && tokens > 0) ttftMs = now() - t0;
    carry = text.slice(-(marker.length - 1)); // a marker split across two chunks
  }
  return { ttftMs, tokens };
}

interface Batch {
  wallMs: number;
  tokens: number;
  ttfts: number[];
  hiveCpuMs: number;
}

/** A deterministic spread of start offsets in [0, spreadMs) (mulberry32), the same for both sides of a run. */
function offsets(seed: number, n: number, spreadMs: number): number[] {
  let a = seed >>> 0;
  const rand = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return Array.from({ length: n }, () => rand() * spreadMs);
}

/**
 * CLIENTS clients, each starting at its offset and then sending PER_CLIENT requests one after
 * another (a closed loop, as load generators for LLM servers do); a burst is all offsets 0.
 */
async function batch(daemonPid: number, url: string, body: string, marker: string, expectTokens: number, starts: number[], perClient: number): Promise<Batch> {
  const cpu0 = cpuMs(daemonPid);
  const t0 = now();
  const client = async (offset: number) => {
    await Bun.sleep(offset);
    const out: Stream[] = [];
    for (let k = 0; k < perClient; k++) out.push(await stream(url, body, marker));
    return out;
  };
  const results = (await Promise.all(starts.map(client))).flat();
  const wallMs = now() - t0;
  const hiveCpuMs = cpuMs(daemonPid) - cpu0;
  for (const r of results) precondition(r.tokens === expectTokens, `every request brings ${expectTokens} tokens (got ${r.tokens} from ${url})`);
  return { wallMs, tokens: results.reduce((a, r) => a + r.tokens, 0), ttfts: results.map((r) => r.ttftMs), hiveCpuMs };
}

async function compare(name: string, daemon: Daemon, sides: { direct: string; hive: string }, body: string, marker: string, expectTokens: number, runs: number) {
  const pid = daemon.proc.pid;
  const burst = Array.from({ length: CLIENTS }, () => 0);
  log(`${name}: warm-up (one burst per side)`);
  const warm: Partial<Record<"direct" | "hive", Batch>> = {};
  for (const side of ["direct", "hive"] as const) warm[side] = await batch(pid, sides[side], body, marker, expectTokens, burst, 1);
  // Clients start spread over one request's time, so arrivals are not one synchronized burst.
  const spreadMs = warm.direct!.wallMs;
  const direct: Batch[] = [];
  const hive: Batch[] = [];
  for (let i = 0; i < runs; i++) {
    const starts = offsets(i + 1, CLIENTS, spreadMs);
    for (const side of rotation(i, ["direct", "hive"] as const)) (side === "direct" ? direct : hive).push(await batch(pid, sides[side], body, marker, expectTokens, starts, PER_CLIENT));
    const tps = (b: Batch) => round(b.tokens / (b.wallMs / 1000));
    log(`${name} run ${i + 1}/${runs}: direct ${tps(direct.at(-1)!)} tok/s, hive ${tps(hive.at(-1)!)} tok/s`);
  }
  const throughput = (b: Batch) => b.tokens / (b.wallMs / 1000);
  const ratios = hive.map((h, i) => throughput(h) / throughput(direct[i]!));
  const ttftDirect = stats(direct.flatMap((b) => b.ttfts));
  const ttftHive = stats(hive.flatMap((b) => b.ttfts));
  const tokensHive = hive.reduce((a, b) => a + b.tokens, 0);
  const cpuHive = hive.reduce((a, b) => a + b.hiveCpuMs, 0);
  const cpuDirect = direct.reduce((a, b) => a + b.hiveCpuMs, 0);
  const burstDirect = stats(warm.direct!.ttfts);
  const burstHive = stats(warm.hive!.ttfts);
  return {
    clients: CLIENTS,
    requests_per_client: PER_CLIENT,
    start_spread_ms: round(spreadMs),
    tokens_per_request: expectTokens,
    runs,
    direct_tokens_per_s: stats(direct.map(throughput)),
    hive_tokens_per_s: stats(hive.map(throughput)),
    throughput_ratio: { ...stats(ratios), per_run: ratios.map((r) => Math.round(r * 1000) / 1000) },
    ttft_ms: { direct: ttftDirect, hive: ttftHive, added_median: round(ttftHive.median - ttftDirect.median) },
    burst_ttft_ms: { note: "all clients at once, one request each (the warm-up batch)", direct: burstDirect, hive: burstHive, added_median: round(burstHive.median - burstDirect.median) },
    hive_cpu: {
      during_hive_batches_ms: round(cpuHive),
      during_direct_batches_ms: round(cpuDirect),
      us_per_streamed_token: round(((cpuHive - cpuDirect) / tokensHive) * 1000),
      clk_tck: CLK_TCK,
    },
  };
}

// ------------------------------------------------------------------ main

const tmp = tempDir("rbee-bench-proxy-");
let daemon: Daemon | undefined;

async function cleanup() {
  if (daemon) {
    daemon.proc.kill("SIGTERM");
    const code = await Promise.race([daemon.proc.exited, Bun.sleep(15_000).then(() => "timeout" as const)]);
    if (code === "timeout") daemon.proc.kill("SIGKILL");
  }
  tmp.cleanup();
}

await runBench(
  "proxy",
  async () => {
    daemon = await startDaemon(tmp.path);
    const model = join(tmp.path, "models/m.gguf");
    const inference = (w: { id: string }) => `${daemon!.url}/v1/workers/${w.id}/inference`;
    const fakeBody = JSON.stringify({ job_id: "bench", max_tokens: TOKENS });
    const TOKEN_MARKER = '"type":"token"';

    const paced = await spawnWorker(daemon, "paced", model);
    log(`(a) ${CLIENTS} clients × ${TOKENS} tokens paced at ${TOKEN_MS} ms, ${RUNS} runs per side`);
    const a = await compare("paced", daemon, { direct: `${paced.url}/v1/inference`, hive: inference(paced) }, fakeBody, TOKEN_MARKER, TOKENS, RUNS);
    const ratioVerdict = verdict(a.throughput_ratio.median, TARGET_RATIO, "at least");
    const ttftVerdict = verdict(a.ttft_ms.added_median, TARGET_TTFT_MS, "at most");

    const unpaced = await spawnWorker(daemon, "unpaced", model);
    log(`(b) ${CLIENTS} clients × ${TOKENS} tokens unpaced`);
    const b = await compare("unpaced", daemon, { direct: `${unpaced.url}/v1/inference`, hive: inference(unpaced) }, fakeBody, TOKEN_MARKER, TOKENS, RUNS);

    let c: unknown = { skipped: `no llama-server at ${LLAMA_SERVER}` };
    if (existsSync(LLAMA_SERVER)) {
      const llama = await spawnWorker(daemon, "llama", LLAMA_MODEL);
      precondition(llama.slots === 4, `llama-server reports 4 slots (got ${llama.slots})`);
      log(`(c) real llama-server, --parallel 4: ${CLIENTS} clients × ${LLAMA_TOKENS} tokens`);
      const chat = JSON.stringify({ messages: [{ role: "user", content: "Tell me a story" }], max_tokens: LLAMA_TOKENS, stream: true, temperature: 0 });
      c = {
        slots: llama.slots,
        ...(await compare(
          "llama-server",
          daemon,
          { direct: `${llama.url}/v1/chat/completions`, hive: `${daemon.url}/v1/workers/${llama.id}/proxy/v1/chat/completions` },
          chat,
          '"delta":{"content"',
          LLAMA_TOKENS,
          RUNS,
        )),
      };
    }
    return {
      bench: "proxy",
      machine: { cpus: navigator.hardwareConcurrency, bun: Bun.version },
      paced_fake_worker: { token_ms: TOKEN_MS, ...a, verdicts: { throughput_ratio: ratioVerdict, added_ttft_ms: ttftVerdict } },
      unpaced_fake_worker: b,
      llama_server: c,
      gpustack_published_ratio: 0.34,
      pass: ratioVerdict.pass && ttftVerdict.pass,
    };
  },
  cleanup,
);
