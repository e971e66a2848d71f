/**
 * Download benchmark (not a test): the provisioner beside `curl -o`, `curl -o && sha256sum &&
 * sync` and `hf download`, on disk and on tmpfs, then kill/resume.
 *
 *   bun bench/download.ts            → prints one JSON object
 *
 * 1. A 1 GiB GGUF file on the fake hub (a pseudo-random 1 MiB block repeated; its sha256
 *    computed once), served through the hub's 302 to the "CDN". The hub answers as `localhost`
 *    and the CDN is 127.0.0.1, another host, as on the real hub.
 * 2. On disk (BENCH_DIR, default the OS temp dir) and on a tmpfs of our own (root; else
 *    /dev/shm): BENCH_RUNS interleaved runs each, the order rotating, of: a child "hive-like"
 *    process running the provisioner (plan, Range stream, sha256, fsync, rename, snapshot link);
 *    `curl -sSL -o` of the same resolve URL (no hash, no fsync); curl + sha256sum + sync (the same
 *    work as the provisioner); `hf download` (huggingface_hub's CLI, HF_ENDPOINT at the fake hub,
 *    when installed: on PATH or in BENCH_HF_VENV; else the row says why it was not measured). Wall
 *    time of each child (process start included) and its CPU seconds per GiB (the child and what it
 *    waited for). Targets: median throughput ≥ 0.75 × curl's and ≥ 2.5 × hf download's.
 * 3. A child downloads the file, gets SIGKILLed at ~50 %, a new child finishes it: the fake hub's
 *    byte counter gives the total bytes served. Target ≤ 1.1 × the file. Preconditions (else the
 *    run fails, exit 2): the kill really happened between 40 % and 60 %, the child died of it, and
 *    the second child resumed bytes from the first.
 * Pass/fail comes from each figure's ratio to its target. Exit 0 pass, 1 a target missed, 2 error.
 * SIGINT/SIGTERM: children are killed, the work dirs (about 1 GiB each) removed, the tmpfs unmounted.
 *
 * Env: BENCH_SIZE (bytes, default 1 GiB), BENCH_RUNS (default 3), BENCH_DIR, BENCH_HF_VENV,
 * BENCH_OPTS (JSON merged into the child's Provisioner options, e.g. '{"initialParallelParts":8}').
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
import { benchLog, precondition, rotation, runBench, stdoutLines, verdict, type Row } from "./harness.ts";

const GiB = 1024 ** 3;
const REPO = "bench/Bench-GGUF";
const FILE = "bench.Q4_K_M.gguf";
const REF = `hf:${REPO}`;
const TARGET_RATIO_VS_CURL = 0.75;
const TARGET_RATIO_VS_HF = 2.5;
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
    for await (const line of stdoutLines(proc)) {
      const msg = JSON.parse(line) as Record<string, unknown>;
      if (msg.done) done = msg;
      else if (msg.phases) phases = msg.phases as ChildResult["phases"];
      else if (killAtBytes !== undefined && killedAt === undefined && (msg.progress as number) >= killAtBytes) {
        killedAt = msg.progress as number;
        proc.kill("SIGKILL");
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

async function runCmd(cmd: string[], env: Record<string, string> = {}): Promise<{ ms: number; cpu_ms: number }> {
  const t0 = performance.now();
  const proc = Bun.spawn(cmd, { stdout: "ignore", stderr: "inherit", env: { ...process.env, ...env } });
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
  for (const u of unmounts) u();
}

/** Where the bench makes its own venv for the hf CLI when none is given (bench/out is ignored by git). */
const OWN_HF_VENV = join(import.meta.dir, "out", "hf-venv");

/**
 * The `hf` CLI (huggingface_hub): in BENCH_HF_VENV, on PATH, in bench/out/hf-venv, or installed
 * there now with `python3 -m venv` + `pip install huggingface-hub` (whatever index pip is set up
 * with); if none of that works the row says why it was not measured.
 */
function findHf(): { cmd: string[]; version: string } | { missing: string } {
  const venvHf = (venv: string) => join(venv, "bin", "hf");
  const candidates = [...(process.env.BENCH_HF_VENV ? [venvHf(process.env.BENCH_HF_VENV)] : []), "hf", "huggingface-cli", venvHf(OWN_HF_VENV)];
  const found = () => {
    for (const c of candidates) {
      const r = Bun.spawnSync(["sh", "-c", 'command -v "$0"', c], { stdout: "pipe" });
      const path = r.stdout.toString().trim();
      if (r.exitCode === 0 && path) return path;
    }
    return null;
  };
  let path = found();
  let installError = "";
  if (!path) {
    log(`no hf CLI: installing huggingface-hub into ${OWN_HF_VENV}`);
    const venv = Bun.spawnSync(["python3", "-m", "venv", OWN_HF_VENV], { stderr: "pipe" });
    const pip = venv.exitCode === 0 ? Bun.spawnSync([join(OWN_HF_VENV, "bin", "pip"), "install", "-q", "huggingface-hub"], { stderr: "pipe" }) : venv;
    installError = pip.exitCode === 0 ? "" : pip.stderr.toString().trim().split("\n").at(-1) ?? "";
    path = found();
  }
  if (!path) return { missing: `the hf CLI is not installed and \`pip install huggingface-hub\` in a venv failed (${installError || "no python3"}); set BENCH_HF_VENV to a venv that has it` };
  // `hf version` prints colours and a hint; keep "hf <version>".
  const v = Bun.spawnSync([path, "version"], { stdout: "pipe", stderr: "pipe", env: { ...process.env, NO_COLOR: "1" } });
  const version = /version:\s*(\S+)/.exec(Bun.stripANSI(v.stdout.toString() + v.stderr.toString()))?.[1];
  return { cmd: [path, "download"], version: `hf ${version ?? "(version unknown)"}` };
}

/** A tmpfs of our own (root), else /dev/shm, else none: where the disk leaves the comparison. */
function tmpfsDir(size: number): { path: string; unmount?: () => void } | { missing: string } {
  const dir = mkdtempSync(join(tmpdir(), "rbee-bench-tmpfs-"));
  const m = Bun.spawnSync(["mount", "-t", "tmpfs", "-o", `size=${Math.ceil((size * 2.5) / 1024 / 1024)}m`, "tmpfs", dir], { stderr: "pipe" });
  if (m.exitCode === 0) return { path: dir, unmount: () => (Bun.spawnSync(["umount", "-l", dir]), rmSync(dir, { recursive: true, force: true })) };
  rmSync(dir, { recursive: true, force: true });
  try {
    return { path: mkdtempSync("/dev/shm/rbee-bench-") };
  } catch {
    return { missing: `no tmpfs: mount failed (${m.stderr.toString().trim()}) and /dev/shm is not writable` };
  }
}

const unmounts: Array<() => void> = [];

type Side = "provisioner" | "curl" | "curl+sha256sum+sync" | "hf download";

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

  // The hub answers as "localhost" and sends the CDN on 127.0.0.1: another host, as on the real
  // hub (the hf CLI and the provisioner both follow the redirect to a host of its own).
  hub = await FakeHub.start({ chunkBytes: 1 << 20, hubHost: "localhost" });
  hub.addRepo({ id: REPO, files: [{ path: FILE, size, seed: 42, sha256 }] });
  const url = `${hub.url}/${REPO}/resolve/main/${FILE}`;
  work = mkdtempSync(join(process.env.BENCH_DIR ?? tmpdir(), "rbee-bench-"));
  const hf = findHf();
  const shm = tmpfsDir(size);
  if ("unmount" in shm && shm.unmount) unmounts.push(shm.unmount);
  else if ("path" in shm) unmounts.push(() => rmSync(shm.path, { recursive: true, force: true }));
  const places: Array<{ name: "disk" | "tmpfs"; dir: string }> = [{ name: "disk", dir: work }];
  if ("path" in shm) places.push({ name: "tmpfs", dir: shm.path });
  const sides: Side[] = ["provisioner", "curl", "curl+sha256sum+sync", ...("cmd" in hf ? (["hf download"] as const) : [])];
  const result: Record<string, unknown> = {
    bench: "download",
    file_bytes: size,
    work_dir: work,
    sha256_precompute_ms: Math.round(hashMs),
    hf_cli: "cmd" in hf ? hf.version : `not measured: ${hf.missing}`,
    tmpfs: "path" in shm ? shm.path : `not measured: ${shm.missing}`,
  };
  const rows: Row[] = [];
  let pass = true;
  for (const place of places) {
    const got: Record<Side, Array<{ ms: number; cpu_ms: number }>> = { provisioner: [], curl: [], "curl+sha256sum+sync": [], "hf download": [] };
    const orders: string[][] = [];
    for (let i = 0; i < runs; i++) {
      const order = rotation(i, sides);
      orders.push(order);
      log(`${place.name} run ${i + 1}/${runs}: ${order.join(" → ")}`);
      for (const side of order) {
        await settle();
        const out = join(place.dir, `run-${i}`);
        if (side === "provisioner") {
          const r = await runChild(hub.url, join(out, "models"));
          got.provisioner.push({ ms: r.ms, cpu_ms: r.cpu_ms ?? -1 });
        } else if (side === "curl") got.curl.push(await runCmd(["curl", "-sS", "-L", "-o", join(out, "curl.bin"), "--create-dirs", url]));
        else if (side === "curl+sha256sum+sync") {
          // the same work as the provisioner: download, verify the sha256, make it durable
          const f = join(out, "curl.bin");
          got[side].push(await runCmd(["sh", "-c", `curl -sS -L --create-dirs -o '${f}' '${url}' && echo '${sha256}  ${f}' | sha256sum -c --quiet && sync '${f}'`]));
        } else if ("cmd" in hf) {
          got[side].push(await runCmd([...hf.cmd, REPO, FILE, "--local-dir", join(out, "hf")], { HF_ENDPOINT: hub.url, HF_HUB_DISABLE_TELEMETRY: "1", HF_HUB_DISABLE_PROGRESS_BARS: "1", HF_HOME: join(out, "hf-home") }));
        }
        rmSync(out, { recursive: true, force: true });
      }
    }
    const med = (xs: Array<{ ms: number }>) => median(xs.map((x) => x.ms));
    const cpuPerGiB = (xs: Array<{ cpu_ms: number }>) => Math.round((median(xs.map((x) => x.cpu_ms)) / 1000 / (size / GiB)) * 100) / 100;
    const provMs = med(got.provisioner);
    const vsCurl = med(got.curl) / provMs;
    const curlVerdict = verdict(vsCurl, TARGET_RATIO_VS_CURL, "at least");
    pass &&= curlVerdict.pass;
    const cpuNote = `CPU s/GiB: hive ${cpuPerGiB(got.provisioner)}, curl ${cpuPerGiB(got.curl)}, curl+sha256sum+sync ${cpuPerGiB(got["curl+sha256sum+sync"])}${got["hf download"].length ? `, hf ${cpuPerGiB(got["hf download"])}` : ""}`;
    rows.push({
      name: `download 1 file of ${Math.round((size / GiB) * 100) / 100} GiB on ${place.name}: throughput vs curl -o`,
      figure: mbps(size, provMs),
      baseline: mbps(size, med(got.curl)),
      unit: "MB/s",
      ratio: Math.round(vsCurl * 1000) / 1000,
      target: `≥ ${TARGET_RATIO_VS_CURL}× curl`,
      pass: curlVerdict.pass,
      note: `${cpuNote}; curl -o neither hashes nor syncs: vs curl && sha256sum && sync ${Math.round((med(got["curl+sha256sum+sync"]) / provMs) * 1000) / 1000}× (${mbps(size, med(got["curl+sha256sum+sync"]))} MB/s)`,
    });
    if (got["hf download"].length) {
      const vsHf = med(got["hf download"]) / provMs;
      const hfVerdict = verdict(vsHf, TARGET_RATIO_VS_HF, "at least");
      pass &&= hfVerdict.pass;
      rows.push({ name: `download on ${place.name}: throughput vs hf download`, figure: mbps(size, provMs), baseline: mbps(size, med(got["hf download"])), unit: "MB/s", ratio: Math.round(vsHf * 1000) / 1000, target: `≥ ${TARGET_RATIO_VS_HF}× hf`, pass: hfVerdict.pass, note: "cmd" in hf ? hf.version : "" });
    } else {
      pass = false;
      rows.push({ name: `download on ${place.name}: throughput vs hf download`, figure: mbps(size, provMs), baseline: null, unit: "MB/s", ratio: null, target: `≥ ${TARGET_RATIO_VS_HF}× hf`, pass: null, note: `not measured: ${"missing" in hf ? hf.missing : ""}` });
    }
    result[place.name] = {
      run_orders: orders,
      MBps: Object.fromEntries(sides.map((s) => [s, got[s].map((r) => mbps(size, r.ms))])),
      median_MBps: Object.fromEntries(sides.map((s) => [s, mbps(size, med(got[s]))])),
      cpu_s_per_GiB: Object.fromEntries(sides.map((s) => [s, cpuPerGiB(got[s])])),
      ratio_vs_curl: Math.round(vsCurl * 1000) / 1000,
      verdict: curlVerdict,
    };
  }
  if ("missing" in shm) rows.push({ name: "download on tmpfs", figure: null, target: null, pass: null, note: `not measured: ${shm.missing}` });

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
  rows.push({
    name: "SIGKILL at ~50 %, restart, finish: bytes served in total",
    figure: Math.round((served / GiB) * 1000) / 1000,
    baseline: Math.round((size / GiB) * 1000) / 1000,
    unit: "GiB",
    ratio: Math.round((served / size) * 1000) / 1000,
    target: `≤ ${TARGET_SERVED_FACTOR}× the file`,
    pass: servedVerdict.pass,
  });
  return { ...result, rows, pass: pass && servedVerdict.pass };
}

if (process.argv[2] === "--child") {
  await child(process.argv[3]!, process.argv[4]!, process.argv[5]!);
} else {
  await runBench("download", main, cleanup);
}
