#!/usr/bin/env bun
/**
 * SSE fan-out bench: 500 subscribers on one download's progress stream. Prints one JSON object.
 *
 * A real daemon (`src/main.ts daemon`, its own process, token set) downloads a 24 MiB model from
 * the fake hub (in this process, paced to 8 MB/s on one connection, so the download lasts ~3 s and
 * sends ~30 progress events at `progress_interval_s = 0.1`). The download is held at its first
 * MiB (a stall) until all subscribers are connected, then released. The subscribers are spread
 * over two client processes (so one loop reading 500 streams does not add its own queueing to
 * the figure); each records the wall-clock arrival (performance.timeOrigin + now, comparable across
 * processes) of every event id on every stream.
 *
 * Per event: delivered to how many subscribers (must be all) and the spread, last arrival − first.
 * Target: every event delivered to all 500, max spread ≤ 50 ms. Baseline (same clients, same
 * run): a bare Bun.serve broadcasting as many events of the same size at the same cadence to the
 * same number of streams: what the client processes and the machine add by themselves.
 *
 * Usage: bun bench/sse.ts [subscribers=500] [client_processes=2]
 * Child modes: --clients <url> <n> <token>, --bare <events> <bytes>
 */
import { join } from "node:path";
import { freePort, tempDir } from "../test/helpers.ts";
import { FakeHub } from "../test/fixtures/fake-hub.ts";
import { prepareDataDir } from "../test/fixtures/hive-process.ts";
import { benchLog, precondition, ratio3, round, runBench, stats, stdoutLines, type Row } from "./harness.ts";

const TOKEN = "bench-sse-token-0123456789abcdef";
const TARGET_SPREAD_MS = 50;
const FILE_BYTES = 24 * 1024 * 1024;
const RATE = 8_000_000;
const ROOT = join(import.meta.dir, "..");
const log = benchLog("sse");
const wall = () => performance.timeOrigin + performance.now();

// ------------------------------------------------------------------ child: subscribers

async function clients(url: string, n: number, token: string): Promise<void> {
  const arrivals = new Map<number, number[]>();
  let ready = 0;
  const one = async () => {
    const res = await fetch(url, { headers: { authorization: `Bearer ${token}` } });
    if (res.status !== 200 || !res.body) throw new Error(`subscribe: ${res.status}`);
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    let first = true;
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      const t = wall();
      buf += decoder.decode(value, { stream: true });
      let end: number;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, end);
        buf = buf.slice(end + 2);
        const id = /^id: (\d+)$/m.exec(event)?.[1];
        if (id === undefined) continue;
        if (first) {
          first = false;
          if (++ready === n) process.stdout.write("ready\n");
        }
        let list = arrivals.get(Number(id));
        if (!list) arrivals.set(Number(id), (list = []));
        list.push(t);
      }
    }
  };
  await Promise.all(Array.from({ length: n }, one));
  process.stdout.write(JSON.stringify(Object.fromEntries(arrivals)) + "\n");
}

// ------------------------------------------------------------------ child: the bare broadcaster

async function bare(events: number, bytes: number): Promise<void> {
  const streams = new Set<ReadableStreamDefaultController<Uint8Array>>();
  const enc = new TextEncoder();
  let started = false;
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    idleTimeout: 0,
    fetch(req) {
      if (new URL(req.url).pathname === "/start") {
        if (!started) {
          started = true;
          void (async () => {
            for (let id = 2; id <= events + 1; id++) {
              await Bun.sleep(100);
              const chunk = enc.encode(`id: ${id}\ndata: ${"x".repeat(bytes)}\n\n`);
              for (const c of streams) c.enqueue(chunk);
            }
            for (const c of streams) c.enqueue(enc.encode("data: [DONE]\n\n")), c.close();
          })();
        }
        return new Response("ok");
      }
      let ctl!: ReadableStreamDefaultController<Uint8Array>;
      const body = new ReadableStream<Uint8Array>({
        start(c) {
          ctl = c;
          streams.add(c);
          c.enqueue(enc.encode(`id: 1\ndata: ${"x".repeat(bytes)}\n\n`));
        },
        cancel() {
          streams.delete(ctl);
        },
      });
      return new Response(body, { headers: { "content-type": "text/event-stream", "cache-control": "no-cache" } });
    },
  });
  process.stdout.write(`${server.port}\n`);
}

// ------------------------------------------------------------------ the bench

const procs = new Set<Bun.Subprocess>();
const dirs: Array<{ cleanup: () => void }> = [];
let hub: FakeHub | undefined;

/** Lines of a child's stdout, as an async queue. */
function lines(proc: Bun.Subprocess) {
  const queue: string[] = [];
  const waiters: Array<(l: string) => void> = [];
  void (async () => {
    for await (const line of stdoutLines(proc)) {
      const w = waiters.shift();
      if (w) w(line);
      else queue.push(line);
    }
  })();
  return (timeoutMs = 60_000) =>
    new Promise<string>((resolve, reject) => {
      const l = queue.shift();
      if (l !== undefined) return resolve(l);
      const t = setTimeout(() => reject(new Error("child said nothing in time")), timeoutMs);
      waiters.push((x) => {
        clearTimeout(t);
        resolve(x);
      });
    });
}

function child(args: string[]) {
  const proc = Bun.spawn([process.execPath, import.meta.path, ...args], { stdout: "pipe", stderr: "inherit", stdin: "ignore" });
  procs.add(proc);
  return { proc, next: lines(proc) };
}

/** Subscribe `total` streams to `url` over `parts` client processes; `go` starts the events once all are connected. */
async function fanOut(url: string, total: number, parts: number, token: string, go: () => Promise<void>) {
  const kids = Array.from({ length: parts }, (_, i) => child(["--clients", url, String(Math.floor(total / parts) + (i < total % parts ? 1 : 0)), token]));
  for (const k of kids) precondition((await k.next()) === "ready", "every subscriber connected and got its first event");
  await go();
  const merged = new Map<number, number[]>();
  for (const k of kids) {
    const got = JSON.parse(await k.next(120_000)) as Record<string, number[]>;
    for (const [id, ts] of Object.entries(got)) merged.set(Number(id), [...(merged.get(Number(id)) ?? []), ...ts]);
    await k.proc.exited;
    procs.delete(k.proc);
  }
  // Only events sent after every subscriber was connected (the first one each got is the replay).
  const ids = [...merged.keys()].sort((a, b) => a - b).slice(1);
  const spreads = ids.map((id) => {
    const ts = merged.get(id)!;
    return { id, delivered: ts.length, spread: Math.max(...ts) - Math.min(...ts) };
  });
  return spreads;
}

async function body() {
  const subscribers = Number(process.argv[2] ?? 500);
  const parts = Number(process.argv[3] ?? 2);
  const dir = tempDir("rbee-bench-sse-");
  dirs.push(dir);
  hub = await FakeHub.start({ ggufHeaders: true, bytesPerSecond: RATE, chunkBytes: 64 * 1024 });
  hub.addRepo({ id: "bench/Sse-GGUF", files: [{ path: "sse.Q4_K_M.gguf", size: FILE_BYTES, seed: 9 }] });
  hub.addFault({ kind: "stall", atByte: 1024 * 1024, path: "sse.Q4_K_M.gguf" }); // held until released
  const port = freePort();
  const { config } = prepareDataDir(dir.path, [40000, 40100], `[downloads]\nhf_endpoint = "${hub.url}"\ndisk_margin_mb = 0\nparallel_parts = 1\nprogress_interval_s = 0.1\n`);
  const hive = Bun.spawn([process.execPath, join(ROOT, "src/main.ts"), "daemon", "--addr", `127.0.0.1:${port}`, "--log-format", "json"], {
    env: { ...process.env, RBEE_DATA_DIR: dir.path, RBEE_CONFIG: config, LLORCH_API_TOKEN: TOKEN, RBEE_LOG: "warn" },
    stdin: "ignore",
    stdout: "ignore",
    stderr: "inherit",
  });
  procs.add(hive);
  const url = `http://127.0.0.1:${port}`;
  const auth = { authorization: `Bearer ${TOKEN}` };
  for (let i = 0; ; i++) {
    if ((await fetch(`${url}/v1/health`).catch(() => null))?.ok) break;
    precondition(i < 2000 && hive.exitCode === null, "the hive answers /v1/health");
    await Bun.sleep(10);
  }
  const res = await fetch(`${url}/v1/models/download`, { method: "POST", headers: { ...auth, "content-type": "application/json" }, body: JSON.stringify({ model_ref: "hf:bench/Sse-GGUF" }) });
  precondition(res.status === 200, `the download started (${res.status})`);
  const { download_id: id } = (await res.json()) as { download_id: string };
  for (let i = 0; hub.stalledCount === 0; i++) {
    precondition(i < 1000, "the download reached the held byte");
    await Bun.sleep(10);
  }
  log(`${subscribers} subscribers over ${parts} processes on download ${id}`);
  const t0 = performance.now();
  const hiveSpreads = await fanOut(`${url}/v1/models/download/progress?id=${id}`, subscribers, parts, TOKEN, async () => hub!.releaseStalls());
  const hiveMs = performance.now() - t0;
  precondition(hiveSpreads.length >= 5, `progress events were sent while all listened (${hiveSpreads.length})`);

  // Baseline: a bare broadcaster with as many events of the same size, same cadence.
  const bareChild = child(["--bare", String(hiveSpreads.length), "180"]);
  const barePort = Number(await bareChild.next());
  const bareSpreads = await fanOut(`http://127.0.0.1:${barePort}/events`, subscribers, parts, TOKEN, async () => {
    await (await fetch(`http://127.0.0.1:${barePort}/start`)).text();
  });

  const undelivered = hiveSpreads.filter((s) => s.delivered !== subscribers);
  const hiveMax = Math.max(...hiveSpreads.map((s) => s.spread));
  const bareMax = Math.max(...bareSpreads.map((s) => s.spread));
  const pass = undelivered.length === 0 && hiveMax <= TARGET_SPREAD_MS;
  const rows: Row[] = [
    {
      name: `SSE fan-out: ${subscribers} subscribers on one download's progress, max spread of an event`,
      figure: round(hiveMax),
      baseline: round(bareMax),
      unit: "ms",
      ratio: ratio3(hiveMax, bareMax),
      target: `≤ ${TARGET_SPREAD_MS} ms, every event to all`,
      pass,
      note: `${hiveSpreads.length} events, each delivered to ${Math.min(...hiveSpreads.map((s) => s.delivered))}–${Math.max(...hiveSpreads.map((s) => s.delivered))} of ${subscribers}; spread median ${stats(hiveSpreads.map((s) => s.spread)).median} ms (bare Bun.serve broadcaster: ${stats(bareSpreads.map((s) => s.spread)).median} ms, max ${round(bareMax)} ms)`,
    },
  ];
  return {
    bench: "sse",
    subscribers,
    client_processes: parts,
    events: hiveSpreads.length,
    download_ms: Math.round(hiveMs),
    hive: { spread_ms: stats(hiveSpreads.map((s) => s.spread)), max_spread_ms: round(hiveMax), undelivered: undelivered.slice(0, 5) },
    bare: { spread_ms: stats(bareSpreads.map((s) => s.spread)), max_spread_ms: round(bareMax) },
    rows,
    pass,
  };
}

async function cleanup() {
  for (const p of procs) p.kill("SIGKILL");
  await Promise.all([...procs].map((p) => p.exited));
  await hub?.stop();
  for (const d of dirs) d.cleanup();
}

const mode = process.argv[2];
if (mode === "--clients") await clients(process.argv[3]!, Number(process.argv[4]), process.argv[5]!);
else if (mode === "--bare") await bare(Number(process.argv[3]), Number(process.argv[4]));
else await runBench("sse", body, cleanup);
