/**
 * Supervisor tests with real processes (no mocks): the fake worker and tiny `bun -e` scripts.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { HiveError } from "../src/shared/errors.ts";
import { spawnSupervised, type SpawnOptions, type SupervisedChild } from "../src/shared/daemon-lifecycle.ts";

const FAKE = join(import.meta.dir, "fixtures", "fake-worker.ts");
const BUN = process.execPath;
/** Flags the fake worker requires; with FAKE_WORKER_NO_CALLBACK=1 the callback URL is never used. */
const FAKE_ARGS = [
  "--worker-id", "w-test", "--model", "/models/x.gguf", "--model-ref", "hf:org/x", "--backend", "cpu",
  "--device", "0", "--port", "1", "--callback-url", "http://127.0.0.1:1/v1/workers/ready",
];

const children: SupervisedChild[] = [];
const strayPids: number[] = [];
const tmpDirs: string[] = [];

function spawn(opts: SpawnOptions): SupervisedChild {
  const c = spawnSupervised(opts);
  children.push(c);
  return c;
}

function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), "rbee-dl-"));
  tmpDirs.push(d);
  return d;
}

afterEach(async () => {
  await Promise.all(children.splice(0).map((c) => c.stop(0)));
  for (const pid of strayPids.splice(0)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* already gone: the expected case */
    }
  }
  for (const d of tmpDirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** Alive and not a zombie (PID 1 in a container may never reap orphans). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as { code?: string }).code === "ESRCH") return false;
    throw e;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false; // vanished between the two checks
  }
}

async function waitFor(cond: () => boolean, timeoutMs = 2000, what = "condition"): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(5);
  }
}

async function readPid(file: string): Promise<number> {
  await waitFor(() => existsSync(file) && readFileSync(file, "utf8").trim() !== "", 3000, "grandchild pid file");
  const pid = Number(readFileSync(file, "utf8").trim());
  strayPids.push(pid);
  return pid;
}

/** argv running a tiny inline script; writeSync so output is never lost at exit. */
const script = (code: string) => [BUN, "-e", `const fs = require("node:fs"); ${code}`];

describe("exit notification", () => {
  test("exited resolves when the child exits, with code and stderr tail (how fast: bench/lifecycle.ts)", async () => {
    const child = spawn({
      id: "quick",
      command: script(`
        fs.writeSync(1, "hello\\n");
        fs.writeSync(2, "err-1\\n");
        fs.writeSync(2, "last " + Date.now() + "\\n");
        process.exit(7);`),
    });
    const exit = await child.exited;
    const resolvedAt = Date.now();
    const last = child.tail(1, "stderr")[0] ?? "";
    expect(last).toMatch(/^last \d+$/);
    const printedAt = Number(last.split(" ")[1]);
    expect(exit).toEqual({ code: 7, signal: null, requested: false, at: exit.at });
    // Seen after the child's last line and before exited resolved: the exit time is the exit's.
    expect(exit.at).toBeGreaterThanOrEqual(printedAt);
    expect(exit.at).toBeLessThanOrEqual(resolvedAt);
    expect(child.exit).toBe(exit);
    expect(child.tail(10, "stderr")).toEqual(["err-1", last]);
    expect(child.tail(10, "stdout")).toEqual(["hello"]);
  });

  test("exit is null until exited resolves", async () => {
    const child = spawn({ id: "n", command: script(`setTimeout(() => {}, 50);`) });
    expect(child.exit).toBeNull();
    await child.exited;
    expect(child.exit?.code).toBe(0);
  });

  test("an external kill is reported with its signal and requested=false", async () => {
    const child = spawn({ id: "crash", command: [FAKE, ...FAKE_ARGS], env: { FAKE_WORKER_NO_CALLBACK: "1" } });
    await waitFor(() => child.tail(50).some((l) => l.includes("hanging")), 3000, "fake worker to hang");
    child.signal("SIGKILL");
    const exit = await child.exited;
    expect(exit.signal).toBe("SIGKILL");
    expect(exit.code).toBeNull();
    expect(exit.requested).toBe(false);
  });
});

describe("stop()", () => {
  test("a cooperative child exits on SIGTERM well before the grace; requested=true", async () => {
    const child = spawn({ id: "coop", command: [FAKE, ...FAKE_ARGS], env: { FAKE_WORKER_NO_CALLBACK: "1" } });
    await waitFor(() => child.tail(50).some((l) => l.includes("hanging")), 3000, "fake worker to hang");
    // A grace far beyond the test timeout: only a stop that ends at the child's own exit can pass.
    const exit = await child.stop(600_000);
    expect(exit).toMatchObject({ code: 0, signal: null, requested: true });
    expect(child.tail(1, "stdout")[0]).toMatch(/^ *\d+\.\d{6}s  INFO received SIGTERM, shutting down$/);
  });

  test("a child ignoring SIGTERM is SIGKILLed after the grace; requested=true", async () => {
    const child = spawn({
      id: "stubborn",
      command: [FAKE, ...FAKE_ARGS],
      env: { FAKE_WORKER_NO_CALLBACK: "1", FAKE_WORKER_IGNORE_SIGTERM: "1" },
    });
    // The start line is printed after the SIGTERM handler is installed.
    await waitFor(() => child.tail(50).some((l) => l.includes("Candle worker starting")), 3000, "fake worker start");
    const t0 = performance.now();
    const exit = await child.stop(300);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(290); // the grace was given before the kill
    expect(exit).toMatchObject({ code: null, signal: "SIGKILL", requested: true });
    expect(child.tail(1, "stdout")[0]).toMatch(/^ *\d+\.\d{6}s  INFO received SIGTERM, ignoring it \(FAKE_WORKER_IGNORE_SIGTERM\)$/);
  });

  test("is idempotent, and after a natural exit just returns the exit (requested=false)", async () => {
    const stubborn = spawn({ id: "a", command: script(`setInterval(() => {}, 1000);`) });
    const p1 = stubborn.stop(100);
    const p2 = stubborn.stop(5000);
    expect(p2).toBe(p1);
    expect((await p1).requested).toBe(true);

    const natural = spawn({ id: "b", command: script(`process.exit(4);`) });
    await natural.exited;
    const again = await natural.stop(100);
    expect(again).toMatchObject({ code: 4, requested: false });
    natural.signal("SIGKILL"); // no-op once exited, must not throw
  });
});

describe("process group", () => {
  const fakeWithGrandchild = (id: string, pidFile: string, env: Record<string, string>) =>
    spawn({ id, command: [FAKE, ...FAKE_ARGS], env: { FAKE_WORKER_GRANDCHILD: pidFile, ...env } });

  test("a grandchild does not survive stop()", async () => {
    const pidFile = join(tmp(), "gc.pid");
    const child = fakeWithGrandchild("gc-stop", pidFile, { FAKE_WORKER_NO_CALLBACK: "1" });
    const gpid = await readPid(pidFile);
    expect(isAlive(gpid)).toBe(true);
    await child.stop(1000);
    await waitFor(() => !isAlive(gpid), 5000, "grandchild to die");
  });

  test("a grandchild does not survive its parent crashing, and does not delay the exit notification", async () => {
    const pidFile = join(tmp(), "gc.pid");
    // Loads for 150 ms, then fails with exit 3; the grandchild inherited our stdout/stderr pipes.
    const child = fakeWithGrandchild("gc-crash", pidFile, { FAKE_WORKER_LOAD_MS: "150", FAKE_WORKER_FAIL_LOAD: "1" });
    const gpid = await readPid(pidFile);
    expect(isAlive(gpid)).toBe(true);
    // The grandchild holds our stdout/stderr pipes open for 600 s: exited must not wait for their
    // end (the per-test timeout is the hang guard; how fast it is: bench/lifecycle.ts).
    const exit = await child.exited;
    expect(exit).toMatchObject({ code: 3, signal: null, requested: false });
    expect(child.tail(5, "stderr")).toEqual([
      "error: failed to load model /models/x.gguf",
      "error: failed to load model: GGUF header invalid (fake, FAKE_WORKER_FAIL_LOAD)",
      expect.stringMatching(/^ +\d+\.\d{6}s ERROR Model loading failed$/),
    ]);
    await waitFor(() => !isAlive(gpid), 5000, "grandchild to die");
  });

  test("a grandchild does not survive a SIGKILL of its parent alone", async () => {
    const pidFile = join(tmp(), "gc.pid");
    const child = fakeWithGrandchild("gc-kill", pidFile, { FAKE_WORKER_NO_CALLBACK: "1" });
    const gpid = await readPid(pidFile);
    process.kill(child.pid, "SIGKILL"); // only the leader, not the group
    const exit = await child.exited;
    expect(exit).toMatchObject({ signal: "SIGKILL", requested: false });
    await waitFor(() => !isAlive(gpid), 5000, "grandchild to die");
  });
});

describe("output", () => {
  test("lines arrive in order in the ring, the log file, the echo and onOutput", async () => {
    const dir = tmp();
    const logFile = join(dir, "nested", "deeper", "w.log"); // parent dirs do not exist yet
    const echoed: string[] = [];
    const seen: Array<[string, string]> = [];
    const child = spawn({
      id: "w-out",
      command: script(`
        for (let i = 1; i <= 50; i++) {
          fs.writeSync(1, "out-" + i + "\\n");
          if (i % 10 === 0) fs.writeSync(2, "err-" + i / 10 + "\\n");
        }
        fs.writeSync(1, "unicode ✓ héllo 🐝\\n");
        fs.writeSync(1, "par");
        await Bun.sleep(30);
        fs.writeSync(1, "tial\\r\\n");
        fs.writeSync(1, "no-newline-at-end");`),
      logFile,
      echo: (l) => echoed.push(l),
      onOutput: (s, l) => seen.push([s, l]),
    });
    await child.exited;

    const expectedOut = [
      ...Array.from({ length: 50 }, (_, i) => `out-${i + 1}`),
      "unicode ✓ héllo 🐝",
      "partial",
      "no-newline-at-end",
    ];
    const expectedErr = ["err-1", "err-2", "err-3", "err-4", "err-5"];
    const only = (lines: string[], re: RegExp) => lines.filter((l) => re.test(l));
    const isErr = /err-\d/;

    expect(child.tail(1000, "stdout")).toEqual(expectedOut);
    expect(child.tail(1000, "stderr")).toEqual(expectedErr);
    expect(child.tail(1000)).toHaveLength(expectedOut.length + expectedErr.length);

    expect(seen.filter(([s]) => s === "stdout").map(([, l]) => l)).toEqual(expectedOut);
    expect(seen.filter(([s]) => s === "stderr").map(([, l]) => l)).toEqual(expectedErr);

    expect(echoed.every((l) => l.startsWith("[w-out] "))).toBe(true);
    const unprefixed = echoed.map((l) => l.slice("[w-out] ".length));
    expect(only(unprefixed, isErr)).toEqual(expectedErr);
    expect(unprefixed.filter((l) => !isErr.test(l))).toEqual(expectedOut);

    // Log written and flushed by the time exited resolved.
    const logLines = readFileSync(logFile, "utf8").split("\n");
    expect(logLines.pop()).toBe(""); // ends with a newline
    expect(only(logLines, isErr)).toEqual(expectedErr);
    expect(logLines.filter((l) => !isErr.test(l))).toEqual(expectedOut);
  });

  test("the log file is appended to, never overwritten", async () => {
    const logFile = join(tmp(), "w.log");
    writeFileSync(logFile, "previous run, a long line that must not be overwritten\n");
    await spawn({ id: "l1", command: script(`fs.writeSync(1, "run-1\\n");`), logFile }).exited;
    await spawn({ id: "l2", command: script(`fs.writeSync(2, "run-2\\n");`), logFile }).exited;
    expect(readFileSync(logFile, "utf8")).toBe("previous run, a long line that must not be overwritten\nrun-1\nrun-2\n");
  });

  test("the ring buffer stays bounded", async () => {
    const child = spawn({
      id: "ring",
      ringLines: 10,
      command: script(`
        for (let i = 1; i <= 100; i++) fs.writeSync(1, "line-" + i + "\\n");
        await Bun.sleep(20);
        for (let i = 1; i <= 4; i++) fs.writeSync(2, "e-" + i + "\\n");`),
    });
    await child.exited;
    const all = child.tail(1000);
    expect(all).toHaveLength(10);
    expect(all).toEqual(["line-95", "line-96", "line-97", "line-98", "line-99", "line-100", "e-1", "e-2", "e-3", "e-4"]);
    expect(child.tail(2, "stderr")).toEqual(["e-3", "e-4"]);
    expect(child.tail(1000, "stdout")).toEqual(["line-95", "line-96", "line-97", "line-98", "line-99", "line-100"]);
    expect(child.tail(0)).toEqual([]);
  });

  test("env is merged over the hive's environment; undefined removes a key", async () => {
    process.env.RBEE_DL_TEST_INHERITED = "yes";
    try {
      const child = spawn({
        id: "env",
        env: { RBEE_DL_TEST_SET: "set", RBEE_DL_TEST_INHERITED: undefined },
        command: script(
          `fs.writeSync(1, [process.env.RBEE_DL_TEST_SET, process.env.RBEE_DL_TEST_INHERITED ?? "none", process.env.PATH ? "path" : "nopath"].join(",") + "\\n");`,
        ),
      });
      await child.exited;
      expect(child.tail(1)).toEqual(["set,none,path"]);
    } finally {
      delete process.env.RBEE_DL_TEST_INHERITED;
    }
  });
});

describe("binary checks", () => {
  const expectNotFound = (command: string[], mentions: string, cwd?: string) => {
    let caught: unknown;
    try {
      spawn({ id: "missing", command, cwd });
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(HiveError);
    const err = caught as HiveError;
    expect(err.status).toBe(500);
    expect(err.code).toBe("WORKER_BINARY_NOT_FOUND");
    expect(err.message).toContain(mentions);
  };

  test("missing path, non-executable file, directory, unknown bare name → WORKER_BINARY_NOT_FOUND", async () => {
    const dir = tmp();
    const notExec = join(dir, "not-executable");
    writeFileSync(notExec, "#!/bin/sh\necho hi\n", { mode: 0o644 });
    expectNotFound(["/nonexistent/llm-worker-rbee", "--port", "1"], "/nonexistent/llm-worker-rbee");
    expectNotFound([notExec], notExec);
    expectNotFound([dir], dir);
    expectNotFound(["llm-worker-rbee-definitely-not-on-path"], "llm-worker-rbee-definitely-not-on-path");
    expectNotFound(["./nope"], join(dir, "nope"), dir);
    expectNotFound([], "empty");
    // Nothing was spawned (a later unhandled error would be reported by bun test and fail the run).
    expect(children).toHaveLength(0);
  });

  test("a relative path resolves against cwd", async () => {
    const child = spawn({
      id: "rel",
      cwd: join(import.meta.dir, "fixtures"),
      command: ["./fake-worker.ts", ...FAKE_ARGS],
      env: { FAKE_WORKER_FAIL_LOAD: "1" },
    });
    expect((await child.exited).code).toBe(3);
  });
});
