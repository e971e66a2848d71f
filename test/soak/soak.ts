#!/usr/bin/env bun
/**
 * Chaos soak: N rounds of random faults against a real hive (`src/main.ts daemon`, its own
 * process) with fake workers and downloads from the fake hub, its data dir on a small tmpfs.
 *
 * Faults (one per round, the kinds first in a shuffled order so a short run covers them all, then
 * at random): worker SIGKILL, worker hang (its /health stops answering), worker crash while loading
 * (killed mid-load, or its load fails), worker crash while serving (killed mid-stream), worker
 * SIGSTOP; hub connection drop, stall and corrupt bytes during a download; hive SIGKILL and
 * restart under either exit policy (workers die with it, or are kept and adopted); SIGTERM while
 * spawns are in flight; the saved state lost across a hive SIGKILL (state.db damaged); disk full on
 * the tmpfs data dir during a download.
 *
 * After every round, once the hive has settled (bounded wait): every worker process (found in
 * /proc by its command line) has a registry entry with its pid and every entry's pid is a live
 * worker; no port of the workers' range is listening without a live worker on it; every file the
 * catalog registers exists with its recorded size (no partial file registered); the catalog passes
 * `PRAGMA integrity_check`; `GET /v1/health` answers within 100 ms. A round that breaks one keeps
 * its logs (the hive's stderr, the worker logs, what the round did) under
 * test-artifacts/soak/seed-<seed>/round-<n>/.
 *
 *   bun run soak [--rounds 300] [--seed N]      (a random seed when none is given; printed)
 *   test/soak/soak.test.ts runs the short version in CI (50 rounds, fixed seed).
 */
import { Database } from "bun:sqlite";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, openSync, writeSync, closeSync, appendFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { FakeHub } from "../fixtures/fake-hub.ts";
import { tinyLlamaSpec, writeGguf } from "../fixtures/gguf-writer.ts";

const ROOT = resolve(import.meta.dir, "../..");
const MAIN = join(ROOT, "src/main.ts");
const FAKE_WORKER = join(ROOT, "test/fixtures/fake-worker.ts");
const TOKEN = "soak-token-0123456789abcdef";
const TMPFS_MB = 96;
const POPULATION = 3;
const SETTLE_MS = 10_000;
const HEALTH_BOUND_MS = 100;

export const FAULTS = [
  "worker_sigkill",
  "worker_hang",
  "worker_crash_loading",
  "worker_crash_serving",
  "worker_sigstop",
  "hub_drop",
  "hub_stall",
  "hub_corrupt",
  "hive_sigkill_restart",
  "hive_state_lost",
  "sigterm_during_spawns",
  "disk_full",
] as const;
export type Fault = (typeof FAULTS)[number];

export interface SoakReport {
  seed: number;
  rounds: number;
  seconds: number;
  faults: Record<string, number>;
  skipped: Record<string, string>;
  violations: Array<{ round: number; fault: string; what: string }>;
  artifacts: string | null;
}

/** mulberry32: a small seeded PRNG, so a failing run is replayed by its seed. */
function prng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, int: (n: number) => Math.floor(next() * n), pick: <T>(xs: readonly T[]) => xs[Math.floor(next() * xs.length)]! };
}

const sleep = (ms: number) => Bun.sleep(ms);

async function until<T>(fn: () => Promise<T | undefined> | T | undefined, timeoutMs: number, everyMs = 25): Promise<T | undefined> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch {
      // not yet
    }
    if (performance.now() > deadline) return undefined;
    await sleep(everyMs);
  }
}

// ------------------------------------------------------------------ /proc

interface Proc {
  pid: number;
  state: string;
  pgrp: number;
}

/** Worker processes of this soak: the fake worker with a model under our data dir. */
function workerProcs(marker: string): Proc[] {
  const out: Proc[] = [];
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const cmd = readFileSync(`/proc/${e}/cmdline`, "utf8");
      if (!cmd.includes("fake-worker") || !cmd.includes(marker)) continue;
      const stat = readFileSync(`/proc/${e}/stat`, "utf8");
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (rest[0] === "Z") continue;
      out.push({ pid: Number(e), state: rest[0]!, pgrp: Number(rest[2]) });
    } catch {
      // gone
    }
  }
  return out;
}

/** Ports in LISTEN state (IPv4 and IPv6) within [min, max]. */
function listeningPorts(min: number, max: number): Set<number> {
  const out = new Set<number>();
  for (const f of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(f, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols[3] !== "0A") continue;
      const port = parseInt(cols[1]!.split(":")[1]!, 16);
      if (port >= min && port <= max) out.add(port);
    }
  }
  return out;
}

// ------------------------------------------------------------------ the soak

class Soak {
  readonly root = mkdtempSync(join(tmpdir(), "rbee-soak-"));
  readonly data = join(this.root, "data");
  readonly logs = join(this.root, "hive-logs");
  readonly rnd: ReturnType<typeof prng>;
  readonly portMin = 30000 + Math.floor(Math.random() * 20000);
  readonly portMax = this.portMin + 400;
  readonly port = this.portMin - 1 - Math.floor(Math.random() * 1000);
  readonly url = `http://127.0.0.1:${this.port}`;
  hub!: FakeHub;
  hive: Bun.Subprocess | null = null;
  hiveStarts = 0;
  keepPolicy = false;
  tmpfs = false;
  tmpfsReason = "";
  config = "";
  modelRef = "";
  repos = 0;
  journal: string[] = [];
  groups = new Set<number>();

  constructor(readonly seed: number, readonly say: (s: string) => void) {
    this.rnd = prng(seed);
  }

  note(s: string) {
    this.journal.push(`${new Date().toISOString()} ${s}`);
  }

  async setup() {
    mkdirSync(this.data, { recursive: true });
    mkdirSync(this.logs, { recursive: true });
    const mount = Bun.spawnSync(["mount", "-t", "tmpfs", "-o", `size=${TMPFS_MB}m`, "tmpfs", this.data], { stderr: "pipe" });
    this.tmpfs = mount.exitCode === 0;
    if (!this.tmpfs) this.tmpfsReason = `cannot mount a tmpfs for the data dir (${mount.stderr.toString().trim() || `exit ${mount.exitCode}`}; needs root)`;
    mkdirSync(join(this.data, "models"), { recursive: true });
    const model = join(this.data, "models", "tiny.gguf");
    writeGguf(model, tinyLlamaSpec());
    this.modelRef = `file:${model}`;
    this.hub = await FakeHub.start({ ggufHeaders: true, chunkBytes: 64 * 1024 });
    this.config = join(this.root, "hive.toml");
    const profile = (env: Record<string, string>) =>
      `binary = "${FAKE_WORKER}"\nenv = { ${Object.entries(env).map(([k, v]) => `${k} = "${v}"`).join(", ")} }`;
    writeFileSync(
      this.config,
      `[workers]
port_min = ${this.portMin}
port_max = ${this.portMax}
stop_grace_s = 0.3
silent = true
loading_stall_timeout_s = 5
[workers.profiles.hang]
${profile({ FAKE_WORKER_HEALTH_HANG_AFTER_MS: "150" })}
[workers.profiles.slowload]
${profile({ FAKE_WORKER_LOAD_MS: "600", FAKE_WORKER_LOAD_OUTPUT_MS: "50" })}
[workers.profiles.loadfail]
${profile({ FAKE_WORKER_LOAD_MS: "50", FAKE_WORKER_FAIL_LOAD: "1" })}
[workers.profiles.streamer]
${profile({ FAKE_WORKER_TOKENS: "200", FAKE_WORKER_TOKEN_MS: "5" })}
[monitor]
interval_s = 0.1
timeout_s = 0.2
failure_threshold = 2
[restart]
base_backoff_s = 0.05
max_backoff_s = 0.2
max_attempts = 1000
window_s = 1
breaker_failures = 1000
breaker_window_s = 1
max_load_failures = 1
[idle]
timeout_s = 0
[shutdown]
worker_grace_s = 0.3
total_timeout_s = 5
[downloads]
hf_endpoint = "${this.hub.url}"
disk_margin_mb = 0
max_retries = 3
stall_timeout_s = 0.4
part_size_mb = 1
progress_interval_s = 0.05
[resources]
overhead_mb = 0
ram_reserve_mb = 0
`,
    );
    await this.startHive();
  }

  async startHive() {
    this.keepPolicy = this.rnd.next() < 0.5;
    const n = ++this.hiveStarts;
    const logFile = join(this.logs, `hive-${n}.log`);
    const fd = openSync(logFile, "a");
    this.hive = Bun.spawn([process.execPath, MAIN, "daemon", "--addr", `127.0.0.1:${this.port}`, "--log-format", "json"], {
      env: {
        ...process.env,
        RBEE_DATA_DIR: this.data,
        RBEE_CONFIG: this.config,
        RBEE_WORKER_BINARY: FAKE_WORKER,
        LLORCH_API_TOKEN: TOKEN,
        RBEE_LOG: "debug",
        RBEE_KEEP_WORKERS_ON_EXIT: this.keepPolicy ? "true" : "false",
        HF_TOKEN: "",
      },
      stdin: "ignore",
      stdout: fd,
      stderr: fd,
    });
    closeSync(fd);
    this.note(`hive #${n} started (pid ${this.hive.pid}, keep_workers_on_exit ${this.keepPolicy})`);
    const up = await until(async () => ((await fetch(`${this.url}/v1/health`)).ok ? true : undefined), 20_000, 10);
    if (!up) throw new Error(`hive #${n} did not answer /v1/health (exit ${this.hive.exitCode}); see ${logFile}`);
  }

  async stopHive(signal: "SIGTERM" | "SIGKILL"): Promise<number | null> {
    const h = this.hive;
    if (!h) return null;
    h.kill(signal);
    const code = await Promise.race([h.exited, sleep(15_000).then(() => null)]);
    if (code === null) h.kill("SIGKILL");
    await h.exited;
    this.hive = null;
    this.note(`hive stopped by ${signal}: exit ${h.exitCode} signal ${h.signalCode}`);
    return code;
  }

  api(path: string, init: RequestInit & { json?: unknown } = {}) {
    const headers = new Headers(init.headers);
    headers.set("authorization", `Bearer ${TOKEN}`);
    if (init.json !== undefined) headers.set("content-type", "application/json");
    return fetch(this.url + path, {
      ...init,
      method: init.method ?? (init.json !== undefined ? "POST" : "GET"),
      headers,
      body: init.json !== undefined ? JSON.stringify(init.json) : init.body,
      signal: init.signal ?? AbortSignal.timeout(15_000),
    });
  }

  async workers(): Promise<any[]> {
    const res = await this.api("/v1/workers/list");
    if (!res.ok) throw new Error(`list ${res.status}`);
    return ((await res.json()) as { workers: any[] }).workers;
  }

  async spawn(profile?: string): Promise<string | null> {
    const res = await this.api("/v1/workers/spawn", { json: { model_ref: this.modelRef, backend: "cpu", device: 0, ...(profile ? { profile } : {}) } });
    const text = await res.text();
    this.note(`spawn ${profile ?? "default"}: ${res.status} ${text.slice(0, 200)}`);
    return res.status === 200 ? (JSON.parse(text) as { worker_id: string }).worker_id : null;
  }

  async waitRunning(id: string, timeoutMs = 5000): Promise<any | undefined> {
    return until(async () => {
      const res = await this.api(`/v1/workers/${id}`);
      const w = res.ok ? ((await res.json()) as any) : undefined;
      return w && w.phase === "running" && w.pid ? w : undefined;
    }, timeoutMs);
  }

  async populate() {
    const live = (await this.workers()).filter((w) => w.phase !== "crash_loop");
    for (let i = live.length; i < POPULATION; i++) await this.spawn();
  }

  /** A repo of its own per download, so every download transfers bytes. */
  newRepo(bytes: number): { ref: string; file: string } {
    const id = `soak/R${++this.repos}-GGUF`;
    const file = `r${this.repos}.Q4_K_M.gguf`;
    this.hub.addRepo({ id, files: [{ path: file, size: bytes, seed: this.repos }] });
    return { ref: `hf:${id}`, file };
  }

  async download(ref: string): Promise<string | null> {
    const res = await this.api("/v1/models/download", { json: { model_ref: ref } });
    const text = await res.text();
    this.note(`download ${ref}: ${res.status} ${text.slice(0, 200)}`);
    return res.status === 200 ? (JSON.parse(text) as { download_id: string }).download_id : null;
  }

  /**
   * Give the disk back after a download round, through the API as an operator would: a complete
   * model is deleted, a failed job's partial files are purged (they stay for a resume otherwise),
   * so the small tmpfs fills only when a round means it to.
   */
  async release(ref: string, id: string | null) {
    const del = await this.api(`/v1/models?model_ref=${encodeURIComponent(ref)}`, { method: "DELETE" });
    await del.arrayBuffer();
    if (id) {
      const purge = await this.api(`/v1/models/download/${id}?purge=true`, { method: "DELETE" });
      await purge.arrayBuffer();
    }
    this.note(`released ${ref}: model DELETE ${del.status}`);
  }

  async downloadEnd(id: string, timeoutMs = 15_000): Promise<string> {
    const end = await until(async () => {
      const res = await this.api("/v1/models/downloads");
      const d = ((await res.json()) as { downloads: any[] }).downloads.find((x) => x.download_id === id || x.id === id);
      if (!d) return "gone";
      return ["complete", "error", "cancelled"].includes(d.state) ? `${d.state}${d.error ? ` (${JSON.stringify(d.error).slice(0, 120)})` : ""}` : undefined;
    }, timeoutMs);
    return end ?? "still running";
  }

  // -------------------------------------------------------------- faults

  async fault(kind: Fault): Promise<string | null> {
    const live = async () => (await this.workers()).filter((w) => w.phase === "running" && w.pid);
    switch (kind) {
      case "worker_sigkill": {
        const w = this.rnd.pick(await live());
        if (!w) return "no running worker";
        process.kill(w.pid, "SIGKILL");
        this.note(`SIGKILL worker ${w.id} pid ${w.pid}`);
        return null;
      }
      case "worker_hang": {
        const id = await this.spawn("hang");
        if (!id) return "spawn refused";
        // Its /health stops answering 150 ms after it listens: the monitor replaces it; then stop it.
        await sleep(900);
        const res = await this.api(`/v1/workers/${id}?drain=false`, { method: "DELETE" });
        this.note(`DELETE hung worker ${id}: ${res.status}`);
        await res.arrayBuffer();
        return null;
      }
      case "worker_crash_loading": {
        if (this.rnd.next() < 0.5) {
          const id = await this.spawn("loadfail");
          if (!id) return "spawn refused";
          await sleep(400);
          return null;
        }
        const id = await this.spawn("slowload");
        if (!id) return "spawn refused";
        const w = await until(async () => {
          const x = (await (await this.api(`/v1/workers/${id}`)).json()) as any;
          return x.pid && x.state === "loading" ? x : undefined;
        }, 3000);
        if (!w) return "the worker never loaded";
        process.kill(w.pid, "SIGKILL");
        this.note(`SIGKILL loading worker ${id} pid ${w.pid}`);
        return null;
      }
      case "worker_crash_serving": {
        const id = await this.spawn("streamer");
        if (!id) return "spawn refused";
        const w = await this.waitRunning(id);
        if (!w) return "the streamer never ran";
        const streams = Array.from({ length: 3 }, () =>
          this.api(`/v1/workers/${id}/inference`, { json: { job_id: "soak", max_tokens: 200 } })
            .then((r) => r.text())
            .catch(() => "cut"),
        );
        await sleep(150);
        process.kill(w.pid, "SIGKILL");
        this.note(`SIGKILL serving worker ${id} pid ${w.pid}`);
        await Promise.all(streams);
        return null;
      }
      case "worker_sigstop": {
        const w = this.rnd.pick(await live());
        if (!w) return "no running worker";
        process.kill(w.pid, "SIGSTOP");
        this.note(`SIGSTOP worker ${w.id} pid ${w.pid}`);
        // The monitor finds it unhealthy, stops it (SIGTERM waits on a stopped process; SIGKILL after the grace) and restarts it.
        await until(async () => ((await this.workers()).find((x) => x.id === w.id)?.pid !== w.pid ? true : undefined), 5000);
        return null;
      }
      case "hub_drop":
      case "hub_stall":
      case "hub_corrupt": {
        const { ref, file } = this.newRepo(3 * 1024 * 1024);
        const at = 1024 * 1024 + this.rnd.int(1024 * 1024);
        if (kind === "hub_drop") this.hub.addFault({ kind: "drop", atByte: at, path: file, times: 1 + this.rnd.int(2) });
        if (kind === "hub_stall") this.hub.addFault({ kind: "stall", atByte: at, ms: 1500, path: file });
        if (kind === "hub_corrupt") this.hub.addFault({ kind: "corrupt", atByte: at, path: file });
        const id = await this.download(ref);
        if (!id) return "download refused";
        this.note(`download ${ref} ended: ${await this.downloadEnd(id)}`);
        await this.release(ref, id);
        return null;
      }
      case "hive_sigkill_restart": {
        await this.stopHive("SIGKILL");
        await this.startHive();
        return null;
      }
      case "hive_state_lost": {
        // SIGKILL, then the saved state is damaged (moved aside at the next start): the kept
        // workers are named by nothing the next hive reads.
        await this.stopHive("SIGKILL");
        for (const f of ["state.db-wal", "state.db-shm"]) rmSync(join(this.data, f), { force: true });
        writeFileSync(join(this.data, "state.db"), "damaged");
        await this.startHive();
        return null;
      }
      case "sigterm_during_spawns": {
        const spawns = Array.from({ length: 3 }, () => this.spawn().catch(() => null));
        await sleep(this.rnd.int(40));
        const code = await this.stopHive("SIGTERM");
        await Promise.all(spawns);
        await this.startHive();
        if (code !== 0) return `!the hive exited ${code} after SIGTERM (expected 0)`;
        return null;
      }
      case "disk_full": {
        if (!this.tmpfs) return `skipped: ${this.tmpfsReason}`;
        const { ref, file } = this.newRepo(24 * 1024 * 1024);
        this.hub.addFault({ kind: "stall", atByte: 2 * 1024 * 1024, ms: 10_000, path: file });
        const id = await this.download(ref);
        if (!id) return "download refused";
        await until(() => (this.hub.stalledCount > 0 ? true : undefined), 5000);
        const filler = join(this.data, "filler.bin");
        fill(filler);
        this.hub.releaseStalls();
        this.note(`disk filled; download ${ref} ended: ${await this.downloadEnd(id)}`);
        rmSync(filler, { force: true });
        await this.release(ref, id);
        return null;
      }
    }
  }

  // -------------------------------------------------------------- invariants

  /** What is wrong now (empty: nothing). */
  async violations(): Promise<string[]> {
    const bad: string[] = [];
    let workers: any[];
    try {
      workers = await this.workers();
    } catch (e) {
      return [`the hive does not list its workers: ${String(e)}`];
    }
    for (const w of workers) if (w.pid) this.groups.add(w.pid);
    const procs = workerProcs(this.data);
    for (const p of procs) this.groups.add(p.pgrp);
    const registered = new Map(workers.filter((w) => w.pid).map((w) => [w.pid as number, w]));
    for (const p of procs) {
      if (!registered.has(p.pid)) bad.push(`worker process ${p.pid} (state ${p.state}) has no registry entry`);
      else if (p.state === "T") bad.push(`worker process ${p.pid} is still stopped (SIGSTOP) and registered as ${registered.get(p.pid).phase}`);
    }
    const alive = new Set(procs.map((p) => p.pid));
    for (const w of workers) if (w.pid && !alive.has(w.pid)) bad.push(`registry entry ${w.id} (phase ${w.phase}) names pid ${w.pid}, which is not running`);
    const ports = listeningPorts(this.portMin, this.portMax);
    const owned = new Set(workers.filter((w) => w.pid && alive.has(w.pid)).map((w) => w.port));
    for (const port of ports) if (!owned.has(port)) bad.push(`port ${port} is listening without a live worker of the registry on it`);
    bad.push(...this.catalogProblems());
    return bad;
  }

  catalogProblems(): string[] {
    const bad: string[] = [];
    const path = join(this.data, "models.db");
    if (!existsSync(path)) return bad;
    let db: Database | undefined;
    try {
      db = new Database(path, { readonly: true });
      const check = db.query("PRAGMA integrity_check").all() as Array<{ integrity_check: string }>;
      if (check.length !== 1 || check[0]!.integrity_check !== "ok") bad.push(`catalog integrity_check: ${JSON.stringify(check).slice(0, 300)}`);
      for (const f of db.query("SELECT reference, local_path, size_bytes FROM model_files").all() as Array<{ reference: string; local_path: string; size_bytes: number }>) {
        let size = -1;
        try {
          size = statSync(f.local_path).size;
        } catch {
          // missing
        }
        if (size !== f.size_bytes) bad.push(`catalog file of ${f.reference} at ${f.local_path}: ${size < 0 ? "missing" : `${size} bytes`}, registered ${f.size_bytes}`);
      }
    } catch (e) {
      bad.push(`catalog cannot be read: ${String(e)}`);
    } finally {
      db?.close();
    }
    return bad;
  }

  /** Best of three GET /v1/health (a GC pause in the soak process is not the hive's). */
  async healthMs(): Promise<number> {
    let best = Infinity;
    for (let i = 0; i < 3 && best > HEALTH_BOUND_MS; i++) {
      const t0 = performance.now();
      try {
        const res = await fetch(`${this.url}/v1/health`, { signal: AbortSignal.timeout(2000) });
        await res.arrayBuffer();
        if (res.ok) best = Math.min(best, performance.now() - t0);
      } catch {
        // counted as not answering
      }
    }
    return best;
  }

  /** Wait for the invariants to hold (transitions in flight settle); what still fails after SETTLE_MS is a violation. */
  async settle(): Promise<string[]> {
    let last: string[] = [];
    const ok = await until(async () => {
      last = await this.violations();
      return last.length === 0 ? true : undefined;
    }, SETTLE_MS, 50);
    const ms = await this.healthMs();
    if (ms > HEALTH_BOUND_MS) last.push(`GET /v1/health took ${Number.isFinite(ms) ? `${Math.round(ms)} ms` : "forever"} (bound ${HEALTH_BOUND_MS} ms)`);
    return ok ? last.filter((v) => v.startsWith("GET /v1/health")) : last;
  }

  /** After a round that broke an invariant: end worker processes the hive does not know, so the next round starts clean. */
  async killStrays() {
    let known = new Set<number>();
    try {
      known = new Set((await this.workers()).filter((w) => w.pid).map((w) => w.pid as number));
    } catch {
      // the hive is not answering: every worker process is a stray
    }
    for (const p of workerProcs(this.data)) {
      if (known.has(p.pid)) continue;
      try {
        process.kill(-p.pgrp, "SIGKILL");
        this.note(`killed stray worker process group ${p.pgrp}`);
      } catch {
        // gone
      }
    }
  }

  keep(dir: string, round: number, fault: string, what: string[]) {
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, "round.txt"), `round ${round}, fault ${fault}, seed ${this.seed}\n\nviolations:\n${what.join("\n")}\n\njournal:\n${this.journal.join("\n")}\n`);
    try {
      cpSync(this.logs, join(dir, "hive-logs"), { recursive: true });
      if (existsSync(join(this.data, "logs"))) cpSync(join(this.data, "logs"), join(dir, "worker-logs"), { recursive: true });
    } catch {
      // best effort: the violations are in round.txt
    }
  }

  async cleanup() {
    await this.stopHive("SIGTERM").catch(() => {});
    for (const p of workerProcs(this.data)) this.groups.add(p.pgrp);
    for (const g of this.groups) {
      try {
        process.kill(-g, "SIGKILL");
      } catch {
        // gone
      }
    }
    await this.hub?.stop();
    if (this.tmpfs) Bun.spawnSync(["umount", "-l", this.data]);
    rmSync(this.root, { recursive: true, force: true });
  }
}

/** Write zeros until the file system is full (ENOSPC ends it). */
function fill(path: string): void {
  const fd = openSync(path, "w");
  const block = Buffer.alloc(1024 * 1024);
  try {
    for (;;) writeSync(fd, block);
  } catch {
    // ENOSPC: full
  } finally {
    closeSync(fd);
  }
}

export async function runSoak(opts: { rounds: number; seed: number; artifacts?: string; say?: (s: string) => void }): Promise<SoakReport> {
  const say = opts.say ?? ((s: string) => process.stderr.write(`[soak] ${s}\n`));
  const artifacts = opts.artifacts ?? join(ROOT, "test-artifacts", "soak", `seed-${opts.seed}`);
  const soak = new Soak(opts.seed, say);
  const report: SoakReport = { seed: opts.seed, rounds: 0, seconds: 0, faults: {}, skipped: {}, violations: [], artifacts: null };
  const t0 = performance.now();
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  try {
    await soak.setup();
    if (!soak.tmpfs) say(`disk_full skipped: ${soak.tmpfsReason}`);
    const order = [...FAULTS].sort(() => soak.rnd.next() - 0.5);
    for (let round = 1; round <= opts.rounds && !interrupted; round++) {
      const kind = round <= order.length ? order[round - 1]! : soak.rnd.pick(FAULTS);
      soak.journal = [];
      soak.note(`round ${round}: ${kind}`);
      const problems: string[] = [];
      try {
        await soak.populate();
        const outcome = await soak.fault(kind);
        if (outcome?.startsWith("!")) problems.push(outcome.slice(1));
        else if (outcome) {
          soak.note(`fault not applied: ${outcome}`);
          report.skipped[kind] = outcome;
        }
        if (!outcome || outcome.startsWith("!")) report.faults[kind] = (report.faults[kind] ?? 0) + 1;
      } catch (e) {
        problems.push(`the round failed: ${e instanceof Error ? e.message : String(e)}`);
        if (!soak.hive || soak.hive.exitCode !== null) {
          problems.push(`the hive died (exit ${soak.hive?.exitCode})`);
          await soak.startHive().catch((err) => problems.push(`the hive did not come back: ${String(err)}`));
        }
      }
      problems.push(...(await soak.settle()));
      report.rounds = round;
      if (process.env.SOAK_VERBOSE) say(soak.journal.join("\n"));
      if (problems.length) {
        for (const what of problems) report.violations.push({ round, fault: kind, what });
        const dir = join(artifacts, `round-${round}`);
        soak.keep(dir, round, kind, problems);
        await soak.killStrays();
        report.artifacts = artifacts;
        say(`round ${round} (${kind}): ${problems.length} violation(s), logs kept in ${dir}`);
      } else if (round % 10 === 0) say(`round ${round}: ok`);
    }
  } finally {
    await soak.cleanup();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
  report.seconds = Math.round((performance.now() - t0) / 100) / 10;
  return report;
}

if (import.meta.main) {
  const args = process.argv.slice(2);
  const arg = (name: string) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const seed = Number(arg("--seed") ?? Math.floor(Math.random() * 2 ** 31));
  const rounds = Number(arg("--rounds") ?? 300);
  process.stderr.write(`[soak] seed ${seed}, ${rounds} rounds (replay: bun run soak --seed ${seed} --rounds ${rounds})\n`);
  const report = await runSoak({ rounds, seed });
  console.log(JSON.stringify(report, null, 2));
  console.log(`soak: ${report.rounds} rounds in ${report.seconds} s, faults ${JSON.stringify(report.faults)}, ${report.violations.length} violations`);
  process.exit(report.violations.length === 0 ? 0 : 1);
}
