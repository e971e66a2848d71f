/** The daemon as a real process: signals, exit codes, port ownership. */
import { afterEach, describe, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { FAKE_WORKER, freePort, MAIN, pidAlive, tempDir, waitFor } from "./helpers.ts";

const cleanups: Array<() => void> = [];
afterEach(() => cleanups.splice(0).forEach((c) => c()));

function startDaemon(port: number, env: Record<string, string> = {}) {
  const d = tempDir();
  const proc = Bun.spawn([process.execPath, MAIN, "daemon", "--addr", `127.0.0.1:${port}`, "--log-format", "json"], {
    env: { ...process.env, RBEE_DATA_DIR: d.path, LLORCH_API_TOKEN: "", ...env },
    stdout: "pipe",
    stderr: "pipe",
  });
  cleanups.push(() => {
    proc.kill("SIGKILL");
    d.cleanup();
  });
  return { proc, dataDir: d.path };
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
    { what: "daemon health" },
  );
}

async function exitAfter(proc: Subprocess, signal: NodeJS.Signals) {
  proc.kill(signal);
  return proc.exited;
}

describe("daemon process", () => {
  for (const signal of ["SIGTERM", "SIGINT"] as const) {
    test(`${signal} stops it with exit status 0`, async () => {
      const port = freePort();
      const { proc } = startDaemon(port);
      await waitHealthy(port);
      expect(await exitAfter(proc, signal)).toBe(0);
      const log = await new Response(proc.stderr as ReadableStream).text();
      expect(log).toContain("shutdown complete");
      await expect(fetch(`http://127.0.0.1:${port}/v1/health`)).rejects.toThrow();
    });
  }

  test("a second daemon on the same port fails loudly", async () => {
    const port = freePort();
    const first = startDaemon(port);
    await waitHealthy(port);
    const second = startDaemon(port);
    expect(await second.proc.exited).toBe(1);
    expect(await new Response(second.proc.stderr as ReadableStream).text()).toContain("already in use");
    // The first one still owns the port and answers.
    expect((await fetch(`http://127.0.0.1:${port}/v1/health`)).status).toBe(200);
    expect(await exitAfter(first.proc, "SIGTERM")).toBe(0);
  });

  test("logs: json when stderr is not a TTY, pretty on request, level from RBEE_LOG", async () => {
    const run = async (args: string[], env: Record<string, string> = {}) => {
      const port = freePort();
      const d = tempDir();
      cleanups.push(d.cleanup);
      const proc = Bun.spawn([process.execPath, MAIN, "--addr", `127.0.0.1:${port}`, ...args], {
        env: { ...process.env, RBEE_DATA_DIR: d.path, LLORCH_API_TOKEN: "", RBEE_LOG: "", ...env },
        stderr: "pipe",
      });
      cleanups.push(() => proc.kill("SIGKILL"));
      await waitHealthy(port);
      await exitAfter(proc, "SIGTERM");
      return (await new Response(proc.stderr as ReadableStream).text()).trim().split("\n");
    };
    const json = await run([]);
    const parsed = json.map((l) => JSON.parse(l));
    expect(parsed.find((l) => l.msg === "request")).toMatchObject({ level: "info", method: "GET", path: "/v1/health", status: 200 });
    const pretty = await run(["--log-format", "pretty"]);
    expect(pretty.some((l) => /^\d{4}-\d\d-\d\dT[\d:.]+Z INFO  request method=GET path=\/v1\/health status=200 ms=/.test(l))).toBe(true);
    const quiet = await run(["--log-format", "json"], { RBEE_LOG: "warn" });
    expect(quiet.filter((l) => l.includes('"level":"info"'))).toEqual([]);
  });

  test("a bad config key stops startup with a message naming it", async () => {
    const port = freePort();
    const d = tempDir();
    cleanups.push(d.cleanup);
    await Bun.write(`${d.path}/hive.toml`, "[monitor]\nfailure_threshold = 0\n");
    const { proc } = startDaemon(port, { RBEE_CONFIG: `${d.path}/hive.toml` });
    expect(await proc.exited).toBe(2);
    expect(await new Response(proc.stderr as ReadableStream).text()).toContain("monitor.failure_threshold");
  });

  async function daemonWithWorker(workerEnv: Record<string, string>) {
    const port = freePort();
    const d = tempDir();
    cleanups.push(d.cleanup);
    mkdirSync(join(d.path, "models"), { recursive: true });
    writeFileSync(join(d.path, "models", "m.gguf"), "GGUF");
    const pidFile = join(d.path, "grandchild.pid");
    const { proc } = startDaemon(port, {
      RBEE_DATA_DIR: d.path,
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
    const { worker_id } = (await res.json()) as any;
    const worker: any = await waitFor(async () => {
      const w: any = await (await fetch(`${base}/v1/workers/${worker_id}`)).json();
      return w.state === "idle" ? w : undefined;
    }, { what: "worker idle" });
    const grandchild = Number(readFileSync(pidFile, "utf8"));
    return { proc, worker, grandchild };
  }

  test("SIGTERM with a running worker: exit 0 and no child or grandchild left", async () => {
    const { proc, worker, grandchild } = await daemonWithWorker({});
    expect(pidAlive(worker.pid)).toBe(true);
    expect(await exitAfter(proc, "SIGTERM")).toBe(0);
    expect(pidAlive(worker.pid)).toBe(false);
    await waitFor(() => !pidAlive(grandchild), { what: "grandchild gone", timeoutMs: 1000 });
  });

  test("a second signal forces: workers are SIGKILLed and the hive exits at once", async () => {
    // The worker ignores SIGTERM, so the graceful stop would wait the whole grace.
    const { proc, worker, grandchild } = await daemonWithWorker({ FAKE_WORKER_IGNORE_SIGTERM: "1" });
    proc.kill("SIGTERM");
    await Bun.sleep(150);
    const started = performance.now();
    proc.kill("SIGINT");
    expect(await proc.exited).toBe(1);
    expect(performance.now() - started).toBeLessThan(2000);
    await waitFor(() => !pidAlive(worker.pid) && !pidAlive(grandchild), { what: "worker group gone", timeoutMs: 1000 });
  });
});
