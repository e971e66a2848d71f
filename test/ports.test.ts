/**
 * Worker ports: the allocator sees what a worker that binds WITHOUT SO_REUSEADDR will see (TIME_WAIT
 * included), and a worker that still cannot bind its port is relaunched at once on another one.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { classifyExit, describeExit, type ExitContext } from "../src/workers/exit-forensics.ts";
import { canBindTcp, parseProcNetTcp, PortAllocator, readTcpSockets, TCP_STATE } from "../src/workers/port-allocator.ts";
import { newRestartHistory, RestartPolicy } from "../src/workers/restart.ts";
import { spawnSupervised, type ChildExit, type Spawner } from "../src/shared/daemon-lifecycle.ts";
import { MAX_PORT_CONFLICTS_IN_A_ROW } from "../src/workers/exit-handler.ts";
import { defaultConfig, freePort, startTestHive, tempDir, waitFor, type TestHive } from "./helpers.ts";

/** (local port, state) of every TCP socket, read here independently of the code under test. */
function statesOf(port: number): number[] {
  const states: number[] = [];
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    for (const line of readFileSync(file, "utf8").split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length >= 4 && parseInt(f[1]!.slice(f[1]!.lastIndexOf(":") + 1), 16) === port) states.push(parseInt(f[3]!, 16));
    }
  }
  return states;
}

/** Two adjacent ports no socket uses right now. */
function twoFreePorts(): [number, number] {
  for (;;) {
    const p = freePort();
    if (p < 65535 && statesOf(p).length === 0 && statesOf(p + 1).length === 0) return [p, p + 1];
  }
}

/**
 * Leave `port` in TIME_WAIT the way a dying worker does: a kept-alive connection that the SERVER
 * side closes first. Bun's server sets SO_REUSEADDR, so its TIME_WAIT passes a SO_REUSEADDR bind.
 */
async function timeWaitOn(port: number): Promise<void> {
  const server = Bun.serve({ hostname: "127.0.0.1", port, reusePort: false, fetch: () => new Response("ok") });
  const res = await fetch(`http://127.0.0.1:${port}/`);
  expect(await res.text()).toBe("ok");
  server.stop(true);
  await waitFor(() => statesOf(port).includes(TCP_STATE.TIME_WAIT), { what: `port ${port} in TIME_WAIT` });
}

/** Containers often run without IPv6; the tcp6 case needs a v6 loopback. */
const ipv6Loopback = (() => {
  try {
    Bun.listen({ hostname: "::1", port: 0, socket: { data() {} } }).stop(true);
    return true;
  } catch {
    console.log("ports.test: no IPv6 loopback here; the tcp6 listener case is skipped");
    return false;
  }
})();

const cleanups: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe("port probe", () => {
  test("parses /proc/net/tcp and tcp6 rows: local port and state", () => {
    const v4 = [
      "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
      "   0: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0",
      "   1: 0100007F:47FF 0100007F:9374 06 00000000:00000000 03:0000176A 00000000     0        0 0 3 0000000000000000",
      "",
    ].join("\n");
    const v6 = [
      "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode",
      "   0: 00000000000000000000000001000000:2329 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0",
    ].join("\n");
    expect(parseProcNetTcp(v4)).toEqual([
      { port: 8081, state: 0x0a },
      { port: 18431, state: 0x06 },
    ]);
    expect(parseProcNetTcp(v6)).toEqual([{ port: 9001, state: 0x0a }]);
  });

  test("a port in TIME_WAIT binds with SO_REUSEADDR, yet the allocator skips it", async () => {
    const [p1, p2] = twoFreePorts();
    await timeWaitOn(p1);
    expect(readTcpSockets()).toContainEqual({ port: p1, state: TCP_STATE.TIME_WAIT });
    // The old probe alone would have handed it out:
    expect(canBindTcp("0.0.0.0", p1)).toBe(true);
    expect(new PortAllocator({ min: p1, max: p2, probeHosts: ["0.0.0.0"] }).allocate()).toBe(p2);
    // A restart prefers its old port; not this one.
    expect(new PortAllocator({ min: p1, max: p2, probeHosts: ["0.0.0.0"] }).allocate(p1)).toBe(p2);
    expect(() => new PortAllocator({ min: p1, max: p1, probeHosts: ["0.0.0.0"] }).allocate()).toThrow(`no free worker port in ${p1}-${p1}`);
  });

  test("sockets our worker left on its port block other binaries, not the same one (the bind probe decides)", async () => {
    const [p1, p2] = twoFreePorts();
    const ports = new PortAllocator({ min: p1, max: p2, probeHosts: ["0.0.0.0"] });
    expect(ports.allocate(undefined, "/opt/a/server")).toBe(p1);
    await timeWaitOn(p1); // as if that worker served a kept-alive connection and died
    ports.release(p1, "/opt/a/server");
    expect(ports.allocate(p1, "/opt/b/llama-server")).toBe(p2);
    ports.release(p2);
    // Its own remnants set SO_REUSEADDR like it does: the same binary gets its port back.
    expect(ports.allocate(p1, "/opt/a/server")).toBe(p1);
    // A hive that did not run it there (e.g. after a hive restart) cannot tell whose they are.
    expect(new PortAllocator({ min: p1, max: p2, probeHosts: ["0.0.0.0"] }).allocate(p1, "/opt/a/server")).toBe(p2);
  });

  test.skipIf(!ipv6Loopback)("a listener on [::1] only (tcp6) is seen too, though a 0.0.0.0 bind would succeed", () => {
    const [p1, p2] = twoFreePorts();
    const v6 = Bun.listen({ hostname: "::1", port: p1, socket: { data() {} } });
    cleanups.push(() => v6.stop(true));
    expect(canBindTcp("0.0.0.0", p1)).toBe(true);
    const ports = new PortAllocator({ min: p1, max: p2, probeHosts: ["0.0.0.0"] });
    expect(ports.hasListener(p1)).toBe(true);
    expect(ports.hasListener(p2)).toBe(false);
    expect(ports.allocate()).toBe(p2);
  });

  test("without /proc the bind probe alone decides", () => {
    const [p1, p2] = twoFreePorts();
    const held = Bun.listen({ hostname: "127.0.0.1", port: p1, socket: { data() {} } });
    cleanups.push(() => held.stop(true));
    const ports = new PortAllocator({ min: p1, max: p2, probeHosts: ["0.0.0.0"], tcpSockets: () => null });
    expect(ports.hasListener(p1)).toBeNull();
    expect(ports.allocate()).toBe(p2);
  });

  test("a quarantined port is skipped until the quarantine ends", () => {
    let now = 0;
    const ports = new PortAllocator({ min: 100, max: 101, probeHosts: ["h"], canBind: () => true, tcpSockets: () => [], now: () => now });
    ports.quarantine(100, 1000);
    expect(ports.allocate(100)).toBe(101);
    ports.release(101);
    now = 999;
    expect(ports.allocate(100)).toBe(101);
    ports.release(101);
    now = 1000;
    expect(ports.allocate(100)).toBe(100);
  });
});

describe("port_conflict classification", () => {
  const failed: ChildExit = { code: 1, signal: null, requested: false, at: 0 };
  const loading = (extra: Partial<ExitContext> = {}): ExitContext => ({ stopReason: null, stopMessage: null, state: "loading", port: 8081, ...extra });

  test("servers' own words for a taken port, at the end of the output", () => {
    for (const line of [
      "main: couldn't bind HTTP server socket, hostname: 127.0.0.1, port: 8081",
      "Error: Address already in use (os error 98)",
      "Error: listen EADDRINUSE: address already in use 0.0.0.0:8081",
      "ERROR:    [Errno 98] error while attempting to bind on address ('0.0.0.0', 8081): address already in use",
      "listen tcp 0.0.0.0:8081: bind: address already in use",
      "[fake-worker] failed to bind 0.0.0.0:8081: Failed to start server. Is port 8081 in use?",
    ]) {
      expect(classifyExit(loading({ outputTail: ["loading model", line] }), failed)).toBe("port_conflict");
    }
    expect(describeExit("port_conflict", failed, loading())).toBe("worker exited with code 1 before it was ready: its port 8081 is taken by another socket");
  });

  test("a listener on the port after the worker's group is gone is a conflict even without words", () => {
    expect(classifyExit(loading({ outputTail: [], portHeldByOther: true }), failed)).toBe("port_conflict");
    expect(classifyExit(loading({ outputTail: ["model file is corrupt"], portHeldByOther: false }), failed)).toBe("load_failed");
  });

  test("only a loading worker that was not stopped can have a port conflict; old lines do not count", () => {
    const words = ["Address already in use (os error 98)"];
    expect(classifyExit(loading({ outputTail: words }), { ...failed, requested: true })).toBe("stopped");
    expect(classifyExit({ ...loading({ outputTail: words }), state: "idle" }, failed)).toBe("crashed");
    const old = ["Address already in use (os error 98)", ...Array.from({ length: 20 }, (_, i) => `retry ${i}`)];
    expect(classifyExit(loading({ outputTail: old }), failed)).toBe("load_failed");
  });

  test("the restart policy never counts a port conflict as a load failure", () => {
    const cfg = { ...defaultConfig("/nonexistent").restart, base_backoff_s: 0, jitter: 0, max_load_failures: 2, max_attempts: 10, breaker_failures: 10 };
    const policy = new RestartPolicy(cfg, () => 0.5);
    const h = newRestartHistory();
    expect(policy.decide(h, "load_failed", 0).action).toBe("restart");
    expect(policy.decide(h, "port_conflict", 1).action).toBe("restart");
    expect(h.consecutiveLoadFailures).toBe(1);
    expect(policy.decide(h, "load_failed", 2)).toEqual({ action: "crash_loop", why: "failed to load 2 times in a row (last: load_failed)" });
  });
});

describe("port conflicts with real processes", () => {
  /** A worker profile running a small Bun script with the port as its argument. */
  async function scriptHive(script: string, config: Parameters<typeof startTestHive>[0] = {}): Promise<TestHive> {
    const dir = tempDir();
    cleanups.push(dir.cleanup);
    const path = join(dir.path, "worker.ts");
    writeFileSync(path, script);
    const h = await startTestHive({
      ...config,
      config: {
        ...config.config,
        workers: {
          ...config.config?.workers,
          profiles: { script: { binary: process.execPath, args: [path, "{port}"], readiness: "http", healthy_status: ["ok"], backends: ["cpu"] } },
        },
      },
    });
    cleanups.push(() => h.close());
    return h;
  }

  test("a worker that exits silently while another process listens on its port: relaunched elsewhere", async () => {
    const [p1, p2] = twoFreePorts();
    // Serves /health, or exits 1 without a word when its port is taken.
    const silent = `const port = Number(process.argv[2]);
try { Bun.serve({ hostname: "127.0.0.1", port, reusePort: false, fetch: () => Response.json({ status: "ok" }) }); } catch { process.exit(1); }
`;
    let squatted = false;
    const spawner: Spawner = (opts) => {
      if (!squatted) {
        squatted = true; // taken after the allocation, before the worker binds
        const squatter = Bun.listen({ hostname: "127.0.0.1", port: Number(opts.command.at(-1)), socket: { data() {} } });
        cleanups.push(() => squatter.stop(true));
      }
      return spawnSupervised(opts);
    };
    const h = await scriptHive(silent, {
      config: { workers: { port_min: p1, port_max: p2 }, restart: { enabled: false } },
      overrides: { spawner },
    });
    const { worker_id } = await h.spawn({ profile: "script" });
    const w = await h.waitState(worker_id, (x) => x.state === "idle" || x.phase === "exited", "idle");
    expect({ state: w.state, port: w.port, restart_count: w.restart_count, reasons: w.exits.map((e: any) => e.reason) }).toEqual({
      state: "idle",
      port: p2,
      restart_count: 0,
      reasons: ["port_conflict"],
    });
    expect(w.exits[0]).toMatchObject({
      code: 1,
      stderr_tail: [],
      message: `worker exited with code 1 before it was ready: its port ${p1} is taken by another socket`,
    });
  });

  test(`at most ${MAX_PORT_CONFLICTS_IN_A_ROW} relaunches in a row skip the restart policy, each on a new port`, async () => {
    const always = `console.error("Error: listen EADDRINUSE: address already in use 127.0.0.1:" + process.argv[2]); process.exit(1);\n`;
    const h = await scriptHive(always, { config: { restart: { enabled: true, base_backoff_s: 0, jitter: 0, max_attempts: 1, max_load_failures: 1 } } });
    const { worker_id } = await h.spawn({ profile: "script" });
    const w = await h.waitState(worker_id, (x) => x.phase === "crash_loop" || x.phase === "exited", "crash_loop", 10000);
    // 1 launch + 3 immediate relaunches, then the policy: 1 restart (max_attempts), then crash_loop.
    const total = MAX_PORT_CONFLICTS_IN_A_ROW + 2;
    expect({ phase: w.phase, restart_count: w.restart_count, crash_loop_reason: w.crash_loop_reason }).toEqual({
      phase: "crash_loop",
      restart_count: 1,
      crash_loop_reason: "1 restarts within 300 s, limit reached (last: port_conflict)",
    });
    expect(w.exits.map((e: any) => e.reason)).toEqual(Array(total).fill("port_conflict"));
    const ports = w.exits.map((e: any) => Number(/its port (\d+) /.exec(e.message)![1]));
    expect(new Set(ports).size).toBe(total);
  });
});
