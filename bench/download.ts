/**
 * Download benchmark (not a test): the provisioner vs `curl -o` on loopback, then kill/resume.
 *
 *   bun bench/download.ts            → prints one JSON object
 *
 * 1. A 1 GiB GGUF file on the fake hub (a pseudo-random 1 MiB block repeated; its sha256
 *    computed once), served through the hub's 302 to the "CDN" port.
 * 2. Three interleaved runs each of: a child "hive-like" process running the provisioner (plan,
 *    ranged parts, sha256 verification, fsync, rename, snapshot link), `curl -sSL -o` of the same
 *    resolve URL (the baseline of the target) and curl + sha256sum + sync (the same work as the
 *    provisioner, reported). The order rotates from run to run, so no side always goes first. Wall
 *    time measured by this process around each child (process start included for all).
 *    Target: median throughput ≥ 0.9 × curl's.
 * 3. A child downloads the file, gets SIGKILLed at ~50 %, a new child finishes it: the fake hub's
 *    byte counter gives the total bytes served. Target ≤ 1.1 × the file. Preconditions (else the
 *    run fails, exit 2): the kill really happened between 40 % and 60 %, the child died of it, and
 *    the second child resumed bytes from the first.
 * Pass/fail comes from each figure's ratio to its target. Exit 0 pass, 1 a target missed, 2 error.
 * SIGINT/SIGTERM: children are killed and the work dir (about 1 GiB) removed before exiting.
 *
 * Env: BENCH_SIZE (bytes, default 1 GiB), BENCH_RUNS (default 3), BENCH_DIR (default the OS temp
 * dir; /dev/shm takes the disk out of the comparison), BENCH_OPTS (JSON merged into the child's
 * Provisioner options, e.g. '{"initialParallelParts":8}' to compare settings).
 * Child mode: bun bench/download.ts --child <endpoint> <modelsDir> <model_ref>
 */
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaultConfig } from "../src/config.ts";
import { Provisioner } from "../src/models/provisioner/index.ts";
import { modelSettings } from "../src/models/settings.ts";
import { createLogger } from "../src/shared/logger.ts";
import { FakeHub, contentSource } from "../test/fixtures/fake-hub.ts";
import { benchLog, precondition, rotation, runBench, verdict } from "./harness.ts";

const GiB = 1024 ** 3;
const REPO = "bench/Bench-GGUF";
const FILE = "bench.Q4_K_M.gguf";
const REF = `hf:${REPO}`;
const TARGET_RATIO_VS_CURL = 0.9;
const TARGET_SERVED_FACTOR = 1.1;
const log = benchLog("download");

async function child(endpoint: string, modelsDir: string, modelRef: string): Promise<void> {
  const t0 = performance.now();
  const logger = createLogger({ format: "json", level: "debug", write: (line) => {
    if (line.includes('"blob complete"')) process.stdout.write(`${JSON.stringify({ phases: JSON.parse(line) })}\n`);
  } });
  const extra = JSON.parse(process.env.BENCH_OPTS ?? "{}") as Record<string, unknown>;
  const p = new Provisioner({ ...modelSettings(defaultConfig()).provisioner, modelsDir, endpoint, diskMarginBytes: 0, logger, ...extra });
  let last = 0;
  const r = await p.download(modelRef, {
    onProgress: (x) => {
      const now = performance.now();
      if (now - last >= 20) {
        last = now;
        process.stdout.write(`${JSON.stringify({ progress: x.bytes_downloaded })}\n`);
      }
    },
  });
  process.stdout.write(`${JSON.stringify({ done: true, ms: performance.now() - t0, stats: r.stats })}\n`);
}

interface ChildResult {
  ms: number;
  cpu_ms?: number;
  inner_ms?: number;
  phases?: { transfer_ms: number; hash_tail_ms: number; fsync_ms: number };
  stats?: Record<string, number>;
  killed?: boolean;
  killedAtBytes?: number;
  exitSignal?: string | null;
}

/** Every child process still running, so an interrupted bench can kill it. */
const running = new Set<Bun.Subprocess>();

async function runChild(endpoint: string, modelsDir: string, killAtBytes?: number): Promise<ChildResult> {
  const t0 = performance.now();
  const proc = Bun.spawn([process.execPath, import.meta.path, "--child", endpoint, modelsDir, REF], {
    stdout: "pipe",
    stderr: "inherit",
  });
  running.add(proc);
  try {
    let done: Record<string, unknown> | null = null;
    let killedAt: number | undefined;
    let phases: ChildResult["phases"];
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of proc.stdout as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const msg = JSON.parse(line) as Record<string, unknown>;
        if (msg.done) done = msg;
        else if (msg.phases) phases = msg.phases as ChildResult["phases"];
        else if (killAtBytes !== undefined && killedAt === undefined && (msg.progress as number) >= killAtBytes) {
          killedAt = msg.progress as number;
          proc.kill("SIGKILL");
        }
      }
    }
    const code = await proc.exited;
    const ms = performance.now() - t0;
    if (killedAt !== undefined) return { ms, killed: true, killedAtBytes: killedAt, exitSignal: proc.signalCode === null ? null : String(proc.signalCode) };
    if (code !== 0 || !done) throw new Error(`child failed with exit code ${code}`);
    return { ms, cpu_ms: cpuMs(proc), inner_ms: done.ms as number, stats: done.stats as Record<string, number>, phases, killed: false };
  } finally {
    proc.kill("SIGKILL");
    running.delete(proc);
  }
}

function cpuMs(proc: { resourceUsage(): { cpuTime: { user: number | bigint; system: number | bigint } } | undefined }): number {
  const u = proc.resourceUsage();
  return u ? Math.round((Number(u.cpuTime.user) + Number(u.cpuTime.system)) / 1000) : -1;
}

async function runCmd(cmd: string[]): Promise<{ ms: number; cpu_ms: number }> {
  const t0 = performance.now();
  const proc = Bun.spawn(cmd, { stdout: "ignore", stderr: "inherit" });
  running.add(proc);
  try {
    const code = await proc.exited;
    if (code !== 0) throw new Error(`${cmd[0]} exited ${code}`);
    return { ms: performance.now() - t0, cpu_ms: cpuMs(proc) };
  } finally {
    running.delete(proc);
  }
}

/** Flush dirty pages left by the previous run so each run starts from the same state. */
async function settle(): Promise<void> {
  await Bun.spawn(["sync"]).exited;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const mbps = (bytes: number, ms: number) => Math.round((bytes / 1e6 / (ms / 1000)) * 10) / 10;

let hub: FakeHub | undefined;
let work: string | undefined;

async function cleanup(): Promise<void> {
  for (const p of running) p.kill("SIGKILL");
  await Promise.all([...running].map((p) => p.exited));
  await hub?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
}

async function main() {
  const size = Number(process.env.BENCH_SIZE ?? GiB);
  const runs = Number(process.env.BENCH_RUNS ?? 3);
  precondition(Number.isFinite(size) && size >= 8 * 1024 * 1024, `BENCH_SIZE of at least 8 MiB (got ${process.env.BENCH_SIZE})`);
  precondition(Number.isInteger(runs) && runs >= 1, `BENCH_RUNS ≥ 1 (got ${process.env.BENCH_RUNS})`);
  // sha256 of the repeated block, computed once
  const t0 = performance.now();
  const src = contentSource({ size, seed: 42 });
  const h = createHash("sha256");
  for (let o = 0; o < size; ) {
    const b = src.read(o, size - o);
    h.update(b);
    o += b.length;
  }
  const sha256 = h.digest("hex");
  const hashMs = performance.now() - t0;

  hub = await FakeHub.start({ chunkBytes: 1 << 20 });
  hub.addRepo({ id: REPO, files: [{ path: FILE, size, seed: 42, sha256 }] });
  const url = `${hub.url}/${REPO}/resolve/main/${FILE}`;
  work = mkdtempSync(join(process.env.BENCH_DIR ?? tmpdir(), "rbee-bench-"));
  const result: Record<string, unknown> = { bench: "download", file_bytes: size, work_dir: work, sha256_precompute_ms: Math.round(hashMs) };

  const prov: ChildResult[] = [];
  const curl: Array<{ ms: number; cpu_ms: number }> = [];
  const curlVerified: Array<{ ms: number; cpu_ms: number }> = [];
  const orders: string[][] = [];
  for (let i = 0; i < runs; i++) {
    const order = rotation(i, ["provisioner", "curl", "curl+sha256sum+sync"] as const);
    orders.push(order);
    log(`run ${i + 1}/${runs}: ${order.join(" → ")}`);
    for (const side of order) {
      await settle();
      if (side === "provisioner") {
        const models = join(work, `models-${i}`);
        prov.push(await runChild(hub.url, models));
        rmSync(models, { recursive: true, force: true });
      } else {
        const out = join(work, `curl-${i}.bin`);
        if (side === "curl") curl.push(await runCmd(["curl", "-sS", "-L", "-o", out, url]));
        else {
          // the same work as the provisioner: download, verify the sha256, make it durable
          curlVerified.push(
            await runCmd(["sh", "-c", `curl -sS -L -o '${out}' '${url}' && echo '${sha256}  ${out}' | sha256sum -c --quiet && sync '${out}'`]),
          );
        }
        rmSync(out, { force: true });
      }
    }
  }
  const provMs = prov.map((r) => r.ms);
  const curlMs = curl.map((r) => r.ms);
  const curlVMs = curlVerified.map((r) => r.ms);
  const ratio = median(curlMs) / median(provMs);
  const throughputVerdict = verdict(ratio, TARGET_RATIO_VS_CURL, "at least");
  result.throughput = {
    run_orders: orders,
    provisioner_MBps: provMs.map((ms) => mbps(size, ms)),
    curl_MBps: curlMs.map((ms) => mbps(size, ms)),
    curl_sha256sum_sync_MBps: curlVMs.map((ms) => mbps(size, ms)),
    provisioner_median_MBps: mbps(size, median(provMs)),
    curl_median_MBps: mbps(size, median(curlMs)),
    curl_sha256sum_sync_median_MBps: mbps(size, median(curlVMs)),
    ratio_vs_curl: Math.round(ratio * 1000) / 1000,
    ratio_vs_curl_sha256sum_sync: Math.round((median(curlVMs) / median(provMs)) * 1000) / 1000,
    target_ratio_vs_curl: TARGET_RATIO_VS_CURL,
    verdict: throughputVerdict,
    pass: throughputVerdict.pass,
    provisioner_inner_ms: prov.map((r) => Math.round(r.inner_ms ?? 0)),
    provisioner_phases_ms: prov.map((r) => ({
      transfer: r.phases?.transfer_ms,
      hash_tail: r.phases?.hash_tail_ms,
      fsync: r.phases?.fsync_ms,
    })),
    cpu_ms_per_run: {
      provisioner: prov.map((r) => r.cpu_ms),
      curl: curl.map((r) => r.cpu_ms),
      curl_sha256sum_sync: curlVerified.map((r) => r.cpu_ms),
    },
    cores: navigator.hardwareConcurrency,
    note:
      "wall time of a child process each (start included). provisioner = plan API calls, one Range stream via the 302 to the CDN port (more only if it is slow), sha256 inline in file order, fdatasync every 32 MiB, fsync, rename, snapshot link. curl = curl -sSL -o (no verification, no fsync). The fake hub runs in this process on the same cores.",
  };

  // Kill at ~50 %, restart, finish.
  hub.clearLog();
  const models = join(work, "models-kill");
  const killed = await runChild(hub.url, models, Math.floor(size / 2));
  precondition(killed.killed, "the first child was killed before it finished (the kill happened)");
  precondition(killed.exitSignal === "SIGKILL", `the first child died of the SIGKILL (signal ${killed.exitSignal})`);
  const at = killed.killedAtBytes!;
  precondition(at >= 0.4 * size && at <= 0.6 * size, `the kill came between 40 % and 60 % (at ${at} of ${size} bytes)`);
  const servedBeforeKill = hub.bytesServed((e) => e.content);
  const finished = await runChild(hub.url, models);
  precondition(!finished.killed && finished.stats, "the second child finished the download");
  precondition((finished.stats.bytes_resumed ?? 0) > 0, `the second child resumed bytes from the first (${finished.stats.bytes_resumed})`);
  const served = hub.bytesServed((e) => e.content);
  const servedVerdict = verdict(served / size, TARGET_SERVED_FACTOR, "at most");
  result.kill_resume = {
    killed_at_bytes: at,
    killed_by: killed.exitSignal,
    served_before_kill_bytes: servedBeforeKill,
    resumed_bytes: finished.stats.bytes_resumed,
    transferred_after_restart_bytes: finished.stats.bytes_transferred,
    total_served_bytes: served,
    total_served_GiB: Math.round((served / GiB) * 1000) / 1000,
    target_factor_of_file: TARGET_SERVED_FACTOR,
    verdict: servedVerdict,
    pass: servedVerdict.pass,
  };
  return { ...result, pass: throughputVerdict.pass && servedVerdict.pass };
}

if (process.argv[2] === "--child") {
  await child(process.argv[3]!, process.argv[4]!, process.argv[5]!);
} else {
  await runBench("download", main, cleanup);
}
