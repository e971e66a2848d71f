/** The tool runner (no shell, timeout with group kill, bounded output) and the coalescing TTL cache. */
import { afterEach, describe, expect, test } from "bun:test";
import { chmodSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { runTool } from "../src/resources/tool-runner.ts";
import { TtlCache } from "../src/resources/ttl-cache.ts";
import { fakeSmi, type FakeSmi } from "./fixtures/fake-smi-path.ts";
import { groupMembers, killGroup, waitFor } from "./helpers.ts";
import { ManualClock } from "./manual-clock.ts";

let smi: FakeSmi | undefined;
const pids: number[] = [];
afterEach(() => {
  for (const pid of pids.splice(0)) killGroup(pid);
  smi?.cleanup();
  smi = undefined;
});

describe("runTool", () => {
  test("runs the tool by argv and returns its output", async () => {
    smi = fakeSmi();
    const r = await runTool(["nvidia-smi", "--query-gpu=index,name", "--format=csv,noheader,nounits"], { timeoutMs: 10_000, env: smi.env() });
    expect(r).toEqual({ ok: true, stdout: "0, NVIDIA GeForce RTX 4090\n1, NVIDIA GeForce RTX 3090\n", stderr: "", code: 0, pid: expect.any(Number) });
  });

  test("a tool that is not on PATH is 'missing', without a process start", async () => {
    smi = fakeSmi({ nvidia: false });
    const r = await runTool(["nvidia-smi", "-L"], { timeoutMs: 10_000, env: smi.env() });
    expect(r).toEqual({ ok: false, kind: "missing", reason: "nvidia-smi not found on PATH", stdout: "", stderr: "", code: null, pid: null });
    expect(smi.calls()).toEqual([]);
  });

  test("an error exit carries the code and the tool's first line", async () => {
    smi = fakeSmi();
    const r = await runTool(["nvidia-smi", "-L"], { timeoutMs: 10_000, env: smi.env({ nvidia: "error" }) });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    expect(r.kind).toBe("failed");
    expect(r.code).toBe(9);
    expect(r.reason).toBe(
      "nvidia-smi exited with code 9: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.",
    );
  });

  test("a hang past the timeout kills the tool's whole process group", async () => {
    smi = fakeSmi();
    const r = await runTool(["nvidia-smi", "-L"], { timeoutMs: 300, env: smi.env({ nvidia: "hang" }) });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    pids.push(r.pid!);
    expect(r.kind).toBe("timeout");
    expect(r.reason).toBe("nvidia-smi did not answer within 0.3 s (killed)");
    // The fake left a child in its group: the group kill takes it too (SIGKILL lands at once; wait
    // only for the kernel to finish it).
    await waitFor(() => groupMembers(r.pid!).length === 0, { timeoutMs: 5000, what: "the tool's process group to be gone" });
  });

  test("output beyond the bound kills the tool", async () => {
    smi = fakeSmi();
    const flood = join(smi.dir, "flood");
    writeFileSync(flood, `#!/usr/bin/env bun\nconst line = "x".repeat(1023) + "\\n";\nfor (;;) process.stdout.write(line);\n`);
    chmodSync(flood, 0o755);
    const r = await runTool(["flood"], { timeoutMs: 10_000, env: smi.env(), maxOutputBytes: 64 * 1024 });
    expect(r).toMatchObject({ ok: false, kind: "too_large", reason: "flood printed more than 65536 bytes (killed)" });
  });

  test("arguments reach the tool as they are: no shell ever sees them", async () => {
    smi = fakeSmi();
    const echo = join(smi.dir, "echo-args");
    writeFileSync(echo, `#!/usr/bin/env bun\nprocess.stdout.write(JSON.stringify(process.argv.slice(2)));\n`);
    chmodSync(echo, 0o755);
    const args = ["$(touch /tmp/x)", "a b", "; rm -rf /", "`id`"];
    const r = await runTool(["echo-args", ...args], { timeoutMs: 10_000, env: smi.env() });
    expect(r.ok && JSON.parse(r.stdout)).toEqual(args);
  });
});

describe("TtlCache", () => {
  test("callers during a load share it; a fresh value is reused until the TTL passes", async () => {
    const clock = new ManualClock();
    let loads = 0;
    let release!: () => void;
    const cache = new TtlCache(async () => {
      loads++;
      await new Promise<void>((r) => (release = r));
      return loads;
    }, 2000, clock);
    const burst = Array.from({ length: 20 }, () => cache.get());
    release();
    expect(await Promise.all(burst)).toEqual(Array(20).fill(1));
    expect(loads).toBe(1);
    clock.advance(1999);
    expect(await cache.get()).toBe(1);
    clock.advance(1);
    const next = cache.get();
    release();
    expect(await next).toBe(2);
    expect(loads).toBe(2);
  });

  test("with a TTL of 0 every call loads, but a burst still shares one load", async () => {
    let loads = 0;
    const cache = new TtlCache(async () => ++loads, 0, new ManualClock());
    expect(await Promise.all([cache.get(), cache.get(), cache.get()])).toEqual([1, 1, 1]);
    expect(await cache.get()).toBe(2);
  });

  test("a failed load is not kept; invalidate() forgets the value", async () => {
    let n = 0;
    const cache = new TtlCache(async () => {
      n++;
      if (n === 1) throw new Error("first fails");
      return n;
    }, 60_000, new ManualClock());
    await expect(cache.get()).rejects.toThrow("first fails");
    expect(await cache.get()).toBe(2);
    expect(await cache.get()).toBe(2);
    cache.invalidate();
    expect(await cache.get()).toBe(3);
  });
});
