/**
 * The hive with the REAL llama.cpp `llama-server` (../shared/realworker): ports in TIME_WAIT, port
 * conflicts, and its SIGTERM → SIGABRT stop. This server binds without SO_REUSEADDR, so a port that
 * the hive's bind probe (SO_REUSEADDR) calls free can still be unbindable for it.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { spawnSupervised, type Spawner } from "../src/shared/daemon-lifecycle.ts";
import { freePort, pidAlive, ROOT, startTestHive, waitFor, type TestHive } from "./helpers.ts";

const REALWORKER = join(ROOT, "../shared/realworker");
const LLAMA_SERVER = join(REALWORKER, "llama-server");
const MODEL_REF = `file:${join(REALWORKER, "tiny-random.Q8_0.gguf")}`;
const present = existsSync(LLAMA_SERVER);
if (!present) console.log(`realworker tests skipped: no llama-server binary at ${LLAMA_SERVER}`);

/** The README's llama-server profile, sized for the tiny model. */
const LLAMA_PROFILE = {
  binary: LLAMA_SERVER,
  args: ["--model", "{model_path}", "--host", "127.0.0.1", "--port", "{port}", "-c", "256", "-t", "1"],
  readiness: "http" as const,
  healthy_status: ["ok"],
  backends: ["cpu"],
};

const TIME_WAIT = 0x06;

/** (local port, state) of every TCP socket on the host, read straight from /proc. */
function tcpSockets(): Array<{ port: number; state: number }> {
  const out: Array<{ port: number; state: number }> = [];
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    for (const line of readFileSync(file, "utf8").split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 4) continue;
      out.push({ port: parseInt(f[1]!.slice(f[1]!.lastIndexOf(":") + 1), 16), state: parseInt(f[3]!, 16) });
    }
  }
  return out;
}
const statesOf = (port: number) => tcpSockets().filter((s) => s.port === port).map((s) => s.state);

/** Two adjacent ports no socket uses right now: the hive's whole worker range. */
function twoFreePorts(): [number, number] {
  for (;;) {
    const p = freePort();
    if (p < 65535 && statesOf(p).length === 0 && statesOf(p + 1).length === 0) return [p, p + 1];
  }
}

/** Leave `port` in TIME_WAIT: a kept-alive connection that the SERVER side closes first. */
async function timeWaitOn(port: number): Promise<void> {
  const server = Bun.serve({ hostname: "127.0.0.1", port, reusePort: false, fetch: () => new Response("ok") });
  const res = await fetch(`http://127.0.0.1:${port}/`);
  expect(await res.text()).toBe("ok");
  server.stop(true);
  await waitFor(() => statesOf(port).includes(TIME_WAIT), { what: `port ${port} in TIME_WAIT` });
}

const hives: TestHive[] = [];
const cleanups: Array<() => void> = [];
afterEach(async () => {
  await Promise.all(hives.splice(0).map((h) => h.close()));
  for (const c of cleanups.splice(0)) c();
});

async function llamaHive(ports: [number, number], spawner?: Spawner): Promise<TestHive> {
  const h = await startTestHive({
    config: {
      workers: { port_min: ports[0], port_max: ports[1], profiles: { "llama-server": LLAMA_PROFILE } },
      paths: { allowed_model_roots: [REALWORKER] },
      // One load failure would park the worker: a port problem must never be counted as one.
      restart: { enabled: true, base_backoff_s: 0, jitter: 0, max_load_failures: 1, max_attempts: 3, breaker_failures: 5 },
    },
    overrides: spawner ? { spawner } : undefined,
  });
  hives.push(h);
  return h;
}

const spawnLlama = (h: TestHive) => h.spawn({ model_ref: MODEL_REF, profile: "llama-server" });
const idle = (h: TestHive, id: string, what: string) => h.waitState(id, (w) => w.state === "idle" || w.phase === "crash_loop", what, 15000);

describe.skipIf(!present)("real llama-server", () => {
  test("a port in TIME_WAIT is not handed out: the worker starts on the next port, nothing counted", async () => {
    const [p1, p2] = twoFreePorts();
    await timeWaitOn(p1);
    const h = await llamaHive([p1, p2]);
    const { worker_id, url } = await spawnLlama(h);
    expect(url).toBe(`http://127.0.0.1:${p2}`);
    const w = await idle(h, worker_id, "idle");
    expect({ phase: w.phase, state: w.state, port: w.port, restart_count: w.restart_count, exits: w.exits }).toEqual({
      phase: "running",
      state: "idle",
      port: p2,
      restart_count: 0,
      exits: [],
    });
  });

  test("killed while the hive held a keep-alive connection: restarted on another port, not a load failure", async () => {
    const [p1, p2] = twoFreePorts();
    const h = await llamaHive([p1, p2]);
    const { worker_id } = await spawnLlama(h);
    const first = await idle(h, worker_id, "idle");
    expect(first.port).toBe(p1);
    // A kept-alive connection to the worker, as the monitor's or a proxy's pooled one.
    let clientClosed!: () => void;
    const closed = new Promise<void>((r) => (clientClosed = r));
    const client = await Bun.connect({
      hostname: "127.0.0.1",
      port: p1,
      socket: {
        data() {},
        end: (s) => {
          s.end();
        },
        close: () => clientClosed(),
      },
    });
    client.write("GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n");
    await waitFor(() => statesOf(p1).includes(0x01), { what: "established connection on the worker port" });
    process.kill(first.pid, "SIGKILL");
    const back = await h.waitState(worker_id, (w) => (w.state === "idle" && w.restart_count === 1) || w.phase === "crash_loop", "back idle", 15000);
    await closed;
    expect({ phase: back.phase, port: back.port, restart_count: back.restart_count, reasons: back.exits.map((e: any) => e.reason) }).toEqual({
      phase: "running",
      port: p2,
      restart_count: 1,
      reasons: ["killed"],
    });
    expect(back.exits[0]).toMatchObject({ code: null, signal: "SIGKILL" });
    // The old port really is left in TIME_WAIT (the killed server's side closed first).
    await waitFor(() => statesOf(p1).includes(TIME_WAIT), { what: `port ${p1} in TIME_WAIT` });
  });

  test("a worker that cannot bind its port is relaunched at once on another port (port_conflict)", async () => {
    const [p1, p2] = twoFreePorts();
    const events: any[] = [];
    // The port is taken between the allocation and the worker's bind, invisible to the allocation
    // probes, and given back as the worker exits: only the worker's own words tell the hive.
    let taken = false;
    const spawner: Spawner = (opts) => {
      if (taken) return spawnSupervised(opts);
      taken = true;
      const port = Number(opts.command[opts.command.indexOf("--port") + 1]);
      const squatter = Bun.listen({ hostname: "127.0.0.1", port, socket: { data() {} } });
      cleanups.push(() => squatter.stop(true));
      const child = spawnSupervised(opts);
      const exited = child.exited.then((e) => {
        squatter.stop(true);
        return e;
      });
      return {
        id: child.id,
        pid: child.pid,
        exited,
        get exit() {
          return child.exit;
        },
        stop: (graceMs) => child.stop(graceMs),
        signal: (sig) => child.signal(sig),
        tail: (n, stream) => child.tail(n, stream),
      };
    };
    const h = await llamaHive([p1, p2], spawner);
    h.bus.subscribe((e) => events.push(e));
    const { worker_id } = await spawnLlama(h);
    const w = await idle(h, worker_id, "idle");
    expect({ phase: w.phase, port: w.port, url: w.url, restart_count: w.restart_count, last_restart: w.last_restart }).toEqual({
      phase: "running",
      port: p2,
      url: `http://127.0.0.1:${p2}`,
      restart_count: 0,
      last_restart: null,
    });
    expect(w.exits).toHaveLength(1);
    expect(w.exits[0]).toMatchObject({
      reason: "port_conflict",
      code: 1,
      signal: null,
      message: `worker exited with code 1 before it was ready: its port ${p1} is taken by another socket`,
    });
    expect(w.exits[0].stderr_tail).toContain(`main: couldn't bind HTTP server socket, hostname: 127.0.0.1, port: ${p1}`);
    // Loading progress (its output while it loads) aside.
    const mine = events.filter((e) => e.data.worker_id === worker_id && e.type !== "loading_progress");
    expect(mine.map((e) => e.type)).toEqual(["spawned", "exited", "restarting", "spawned", "ready"]);
    expect(mine[1]!.data).toMatchObject({ reason: "port_conflict", code: 1 });
    expect(mine[2]!.data).toEqual({ worker_id, attempt: 0, delay_ms: 0, reason: "port_conflict" });
    expect(mine[3]!.data).toMatchObject({ port: p2, restart_count: 0 });
  });

  test("stop: llama-server aborts on SIGTERM (SIGABRT), still recorded as stopped", async () => {
    const h = await llamaHive(twoFreePorts());
    const { worker_id } = await spawnLlama(h);
    const w = await idle(h, worker_id, "idle");
    expect(w.state).toBe("idle");
    const res = await h.api(`/v1/workers/${worker_id}`, { method: "DELETE" });
    expect(res.status).toBe(200);
    const final: any = await res.json();
    expect(final.last_exit).toMatchObject({ reason: "stopped", code: null, signal: "SIGABRT", message: "stopped on request (SIGABRT)" });
    expect(final.exits.map((e: any) => e.reason)).toEqual(["stopped"]);
    expect(pidAlive(w.pid)).toBe(false);
  });
});
