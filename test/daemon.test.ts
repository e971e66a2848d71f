/** The daemon as a real process: signals, exit codes, port ownership. */
import { afterEach, describe, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import { freePort, MAIN, tempDir, waitFor } from "./helpers.ts";

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

  test("a bad config key stops startup with a message naming it", async () => {
    const port = freePort();
    const d = tempDir();
    cleanups.push(d.cleanup);
    await Bun.write(`${d.path}/hive.toml`, "[monitor]\nfailure_threshold = 0\n");
    const { proc } = startDaemon(port, { RBEE_CONFIG: `${d.path}/hive.toml` });
    expect(await proc.exited).toBe(2);
    expect(await new Response(proc.stderr as ReadableStream).text()).toContain("monitor.failure_threshold");
  });
});
