/** The daemon as a real process: signals, exit codes, port ownership. */
import { afterEach, describe, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tinyLlamaSpec, writeGguf } from "./fixtures/gguf-writer.ts";
import { exitWithin, FAKE_WORKER, freePort, groupMembers, killGroup, MAIN, pidAlive, tempDir, waitFor } from "./helpers.ts";

/** Hang guard for a daemon that should exit: far above any real exit, far below the test timeout. */
const EXIT_GUARD_MS = 10_000;

const cleanups: Array<() => void> = [];
afterEach(() => {
  // Last in, first out: worker groups before the daemon's temp dir.
  for (const c of cleanups.splice(0).reverse()) c();
});

/** stderr read as it arrives, so a test can wait for a line and still assert on all of it. */
function collect(stream: ReadableStream<Uint8Array>) {
  const out = { text: "", done: Promise.resolve() };
  const decoder = new TextDecoder();
  out.done = (async () => {
    for await (const chunk of stream as unknown as AsyncIterable<Uint8Array>) out.text += decoder.decode(chunk, { stream: true });
  })();
  return out;
}

function startDaemon(port: number, env: Record<string, string> = {}, args: string[] = ["--log-format", "json"]) {
  const d = tempDir();
  const proc = Bun.spawn([process.execPath, MAIN, "daemon", "--addr", `127.0.0.1:${port}`, ...args], {
    env: { ...process.env, RBEE_DATA_DIR: d.path, LLORCH_API_TOKEN: "", RBEE_LOG: "", ...env },
    stdout: "ignore",
    stderr: "pipe",
  });
  cleanups.push(() => {
    proc.kill("SIGKILL");
    d.cleanup();
  });
  return { proc, dataDir: d.path, stderr: collect(proc.stderr as ReadableStream<Uint8Array>) };
}

async function waitHealthy(port: number) {
  return waitFor(
    async () => {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/v1/health`);
        return res.ok;
      } catch {
        return false;
      }
    },
    { what: "daemon health", timeoutMs: 10_000 },
  );
}

async function exitAfter(proc: Subprocess, signal: NodeJS.Signals) {
  proc.kill(signal);
  return exitWithin(proc, EXIT_GUARD_MS, `daemon after ${signal}`);
}

const logLines = (text: string) => text.trim().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);

describe("daemon process", () => {
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    test(`${signal} stops it with exit status 0`, async () => {
      const port = freePort();
      const { proc, stderr } = startDaemon(port);
      await waitHealthy(port);
      expect(await exitAfter(proc, signal)).toBe(0);
      await stderr.done;
      const msgs = logLines(stderr.text).map((l) => l.msg);
      expect(msgs.slice(-2)).toEqual(["shutting down", "shutdown complete"]);
      expect(logLines(stderr.text).find((l) => l.msg === "shutting down")).toMatchObject({ reason: signal });
      await expect(fetch(`http://127.0.0.1:${port}/v1/health`)).rejects.toThrow();
    });
  }

  test("a second daemon on the same port fails loudly", async () => {
    const port = freePort();
    const first = startDaemon(port);
    await waitHealthy(port);
    const second = startDaemon(port);
    expect(await exitWithin(second.proc, EXIT_GUARD_MS, "second daemon")).toBe(1);
    await second.stderr.done;
    expect(second.stderr.text).toBe(
      `rbee-hive: cannot bind 127.0.0.1:${port}: the address is already in use (is another rbee-hive running?)\n`,
    );
    // The first one still owns the port and answers.
    expect((await fetch(`http://127.0.0.1:${port}/v1/health`)).status).toBe(200);
    expect(await exitAfter(first.proc, "SIGTERM")).toBe(0);
  });

  test("logs: json when stderr is not a TTY, pretty on request, level from RBEE_LOG", async () => {
    const run = async (args: string[], env: Record<string, string> = {}) => {
      const port = freePort();
      const { proc, stderr } = startDaemon(port, env, args);
      await waitHealthy(port);
      expect((await fetch(`http://127.0.0.1:${port}/v1/workers/list`)).status).toBe(200);
      expect(await exitAfter(proc, "SIGTERM")).toBe(0);
      await stderr.done;
      return stderr.text.trim().split("\n");
    };
    const json = await run([]);
    const parsed = json.map((l) => JSON.parse(l));
    // The health polls before it are debug lines, not shown at info.
    expect(parsed.filter((l) => l.msg === "request")).toEqual([{
      ts: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/),
      level: "info",
      msg: "request",
      method: "GET",
      path: "/v1/workers/list",
      status: 200,
      ms: expect.any(Number),
      correlation_id: expect.stringMatching(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/),
    }]);
    const pretty = await run(["--log-format", "pretty"]);
    expect(pretty.filter((l) => / request /.test(l))[0]).toMatch(
      /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO  request method=GET path=\/v1\/workers\/list status=200 ms=\d+(\.\d+)? correlation_id=[0-9a-f-]{36}$/,
    );
    const quiet = await run(["--log-format", "json"], { RBEE_LOG: "warn" });
    expect(quiet.filter((l) => l !== "")).toEqual([]); // nothing at warn or above happened
  });

  test("a bad config key stops startup with a message naming it", async () => {
    const port = freePort();
    const d = tempDir();
    cleanups.push(d.cleanup);
    await Bun.write(`${d.path}/hive.toml`, "[monitor]\nfailure_threshold = 0\n");
    const { proc, stderr } = startDaemon(port, { RBEE_CONFIG: `${d.path}/hive.toml` });
    expect(await exitWithin(proc, EXIT_GUARD_MS, "daemon with a bad config")).toBe(2);
    await stderr.done;
    expect(stderr.text).toBe("rbee-hive: config key monitor.failure_threshold: Expected integer to be greater or equal to 1 (got 0)\n");
  });

  async function daemonWithWorker(workerEnv: Record<string, string>, toml = "") {
    const port = freePort();
    const d = tempDir();
    cleanups.push(d.cleanup);
    mkdirSync(join(d.path, "models"), { recursive: true });
    writeGguf(join(d.path, "models", "m.gguf"), tinyLlamaSpec());
    const pidFile = join(d.path, "grandchild.pid");
    const config = join(d.path, "hive.toml");
    // The fake worker takes next to nothing: no 1 GiB overhead per worker, no RAM kept back.
    writeFileSync(config, `${toml}\n[resources]\noverhead_mb = 0\nram_reserve_mb = 0\n`);
    const daemon = startDaemon(port, {
      RBEE_DATA_DIR: d.path,
      RBEE_CONFIG: config,
      RBEE_WORKER_BINARY: FAKE_WORKER,
      RBEE_SILENT: "1",
      FAKE_WORKER_GRANDCHILD: pidFile,
      ...workerEnv,
    });
    await waitHealthy(port);
    const base = `http://127.0.0.1:${port}`;
    const res = await fetch(`${base}/v1/workers/spawn`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model_ref: `file:${join(d.path, "models", "m.gguf")}`, backend: "cpu", device: 0 }),
    });
    expect(res.status).toBe(200);
    const { worker_id } = (await res.json()) as any;
    const worker: any = await waitFor(async () => {
      const w: any = await (await fetch(`${base}/v1/workers/${worker_id}`)).json();
      return w.state === "idle" ? w : undefined;
    }, { what: "worker idle" });
    // The worker leads its own group (grandchild included): never leave it, whatever happens below.
    cleanups.push(() => killGroup(worker.pid));
    const grandchild = Number(readFileSync(pidFile, "utf8"));
    return { ...daemon, worker, grandchild };
  }

  test("SIGTERM with a running worker: exit 0 and no child or grandchild left", async () => {
    const { proc, worker, grandchild } = await daemonWithWorker({});
    expect(pidAlive(worker.pid)).toBe(true);
    expect(pidAlive(grandchild)).toBe(true);
    expect(await exitAfter(proc, "SIGTERM")).toBe(0);
    expect(pidAlive(worker.pid)).toBe(false);
    await waitFor(() => groupMembers(worker.pid).length === 0, { what: "worker group (grandchild included) gone", timeoutMs: 5000 });
    expect(pidAlive(grandchild)).toBe(false);
  });

  test("a second signal forces: workers are SIGKILLed and the hive exits 1 without waiting the grace", async () => {
    // The worker ignores SIGTERM and the grace is a minute: only the forced path can end this quickly.
    const { proc, worker, grandchild, stderr } = await daemonWithWorker(
      { FAKE_WORKER_IGNORE_SIGTERM: "1" },
      "[shutdown]\nworker_grace_s = 60\ntotal_timeout_s = 120\n",
    );
    proc.kill("SIGTERM");
    await waitFor(() => stderr.text.includes('"msg":"shutting down"'), { what: "graceful shutdown under way" });
    proc.kill("SIGINT");
    expect(await exitWithin(proc, EXIT_GUARD_MS, "daemon after the second signal")).toBe(1);
    await stderr.done;
    expect(logLines(stderr.text).find((l) => l.msg === "second signal: forcing exit")).toMatchObject({ level: "warn", signal: "SIGINT" });
    await waitFor(() => groupMembers(worker.pid).length === 0, { what: "worker group gone", timeoutMs: 5000 });
    expect(pidAlive(worker.pid)).toBe(false);
    expect(pidAlive(grandchild)).toBe(false);
  });
});
