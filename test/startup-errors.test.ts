/**
 * What an operator sees when the daemon cannot start or stop cleanly: exact one-line messages and
 * one exit-code rule (2 = the command line or configuration is wrong, 1 = the daemon failed).
 */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, loadConfig } from "../src/config.ts";
import { FAKE_WORKER, freePort, MAIN, pidAlive, tempDir, waitFor } from "./helpers.ts";
import { tinyLlamaSpec, writeGguf } from "./fixtures/gguf-writer.ts";

function killGroup(pid: number) {
  try {
    process.kill(-pid, "SIGKILL");
  } catch {}
}

const dirs: Array<{ cleanup: () => void }> = [];
afterEach(() => dirs.splice(0).forEach((d) => d.cleanup()));
function dir() {
  const d = tempDir();
  dirs.push(d);
  return d.path;
}

function configError(toml: string): string {
  const d = dir();
  const file = join(d, "hive.toml");
  writeFileSync(file, toml);
  try {
    loadConfig({ flags: { config: file }, env: { HOME: d } });
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error("expected a ConfigError");
}

describe("unknown config keys name the key itself", () => {
  test("a misspelt key in a section", () => {
    expect(configError("[monitor]\nintervall_s = 5")).toBe(
      "unknown config key monitor.intervall_s; known keys here: interval_s, timeout_s, failure_threshold, heartbeat_stale_s, startup_grace_s",
    );
  });
  test("a top-level key", () => {
    expect(configError("bogus_top = 1")).toBe(
      "unknown config key bogus_top; known keys here: server, paths, workers, monitor, idle, restart, shutdown, downloads, queen, audit, resources",
    );
  });
  test("a key whose value is an array", () => {
    expect(configError('[server]\nadr = ["x"]')).toBe(
      "unknown config key server.adr; known keys here: addr, body_limit_bytes, log_format, sse_keepalive_s, events_buffer",
    );
  });
  test("a key inside a worker profile", () => {
    expect(configError("[workers.profiles.x]\nbogus = 1")).toBe(
      "unknown config key workers.profiles.x.bogus; known keys here: binary, args, readiness, readiness_path, health_path, healthy_status, backends, env, inference_path, progress_path, slots",
    );
  });
});

async function runDaemon(args: string[], env: Record<string, string>) {
  const proc = Bun.spawn([process.execPath, MAIN, ...args], {
    env: { ...process.env, LLORCH_API_TOKEN: "", ...env },
    stdout: "pipe",
    stderr: "pipe",
  });
  const guard = setTimeout(() => proc.kill("SIGKILL"), 15_000);
  const code = await proc.exited;
  clearTimeout(guard);
  return { code, stderr: await new Response(proc.stderr).text() };
}

describe("exit codes: 2 for a wrong command line or configuration, 1 for a failure", () => {
  test("refusing a non-loopback bind without a token is a configuration error (2)", async () => {
    const d = dir();
    const { code, stderr } = await runDaemon(["daemon", "--addr", "0.0.0.0:0"], { RBEE_DATA_DIR: d });
    expect(code).toBe(2);
    expect(stderr).toBe(
      "rbee-hive: refusing to bind 0.0.0.0: a non-loopback address needs LLORCH_API_TOKEN (at least 16 characters); bind 127.0.0.1 or set a token\n",
    );
  });

  test("a data dir that cannot be created is one line, not a stack trace (1)", async () => {
    const d = dir();
    // A file where a directory should be: fails for root too (permission bits would not).
    const blocked = join(d, "file-not-dir");
    writeFileSync(blocked, "");
    const { code, stderr } = await runDaemon(["--addr", "127.0.0.1:0"], { RBEE_DATA_DIR: join(blocked, "data") });
    expect(code).toBe(1);
    expect(stderr.split("\n").filter(Boolean)).toEqual([
      `rbee-hive: cannot use the data dir ${join(blocked, "data")}: ENOTDIR (a path component is not a directory)`,
    ]);
  });

  test("a read-only data dir (EROFS) is one line, not a stack trace (1)", async () => {
    const d = dir();
    const ro = join(d, "ro");
    mkdirSync(ro);
    const mount = Bun.spawnSync(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", ro]);
    if (mount.exitCode !== 0) {
      console.warn(`skipped: cannot mount a read-only tmpfs here (${mount.stderr.toString().trim()})`);
      return;
    }
    try {
      const { code, stderr } = await runDaemon(["--addr", "127.0.0.1:0"], { RBEE_DATA_DIR: ro });
      expect(code).toBe(1);
      expect(stderr.split("\n").filter(Boolean)).toEqual([`rbee-hive: cannot use the data dir ${ro}: EROFS (read-only file system)`]);
    } finally {
      Bun.spawnSync(["umount", ro]);
    }
  });
});

describe("shutdown exit status", () => {
  test("a shutdown that ran past total_timeout_s and had to force-kill exits 1, with no worker left", async () => {
    const d = dir();
    const config = join(d, "hive.toml");
    writeGguf(join(d, "tiny.gguf"), tinyLlamaSpec());
    writeFileSync(
      config,
      [
        "[paths]",
        `allowed_model_roots = [${JSON.stringify(d)}]`,
        "[workers]",
        `binary = ${JSON.stringify(FAKE_WORKER)}`,
        "silent = true",
        "[shutdown]",
        "worker_grace_s = 30",
        "total_timeout_s = 0.3",
        // The fake worker takes next to nothing: no 1 GiB overhead, no RAM kept back.
        "[resources]",
        "overhead_mb = 0",
        "ram_reserve_mb = 0",
      ].join("\n"),
    );
    const port = freePort();
    const proc = Bun.spawn([process.execPath, MAIN, "--addr", `127.0.0.1:${port}`, "--config", config], {
      env: { ...process.env, LLORCH_API_TOKEN: "", RBEE_DATA_DIR: join(d, "data"), FAKE_WORKER_IGNORE_SIGTERM: "1" },
      stdout: "ignore",
      stderr: "pipe",
    });
    let pid = 0;
    try {
      const base = `http://127.0.0.1:${port}`;
      await waitFor(() => fetch(`${base}/v1/health`).then((r) => r.ok).catch(() => false), { what: "daemon up", timeoutMs: 10_000 });
      const res = await fetch(`${base}/v1/workers/spawn`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model_ref: `file:${join(d, "tiny.gguf")}`, backend: "cpu", device: 0 }),
      });
      const { worker_id } = (await res.json()) as { worker_id: string };
      const worker = await waitFor(
        async () => {
          const w = (await (await fetch(`${base}/v1/workers/${worker_id}`)).json()) as { state: string; pid: number };
          return w.state === "idle" ? w : null;
        },
        { what: "worker idle" },
      );
      pid = worker.pid;
      proc.kill("SIGTERM");
      const guard = setTimeout(() => proc.kill("SIGKILL"), 15_000);
      expect(await proc.exited).toBe(1);
      clearTimeout(guard);
      await waitFor(() => !pidAlive(pid), { what: "worker gone", timeoutMs: 2000 });
      expect(await new Response(proc.stderr).text()).toContain('"msg":"shutdown bound exceeded; forcing"');
    } finally {
      proc.kill("SIGKILL");
      if (pid) killGroup(pid);
    }
  });
});
