/** Shared test plumbing: temp dirs, free ports, an in-process hive on 127.0.0.1. */
import { expect } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { HiveError } from "../src/shared/errors.ts";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { defaultConfig, loadConfig, type HiveConfig, type LoadedConfig } from "../src/config.ts";
import { createLogger, type Logger } from "../src/shared/logger.ts";
import { modelSettings } from "../src/models/settings.ts";
import { parseModelRef, type FileModelRef, type HfModelRef } from "../src/models/model-catalog/model-ref.ts";

export const ROOT = resolve(import.meta.dir, "..");
export const MAIN = join(ROOT, "src/main.ts");
export const FAKE_WORKER = join(ROOT, "test/fixtures/fake-worker.ts");

export function tempDir(prefix = "rbee-test-"): { path: string; cleanup: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

/** A port that was free a moment ago (bind :0, read, close). */
export function freePort(): number {
  const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = s.port;
  s.stop(true);
  return port;
}

/** Logger that keeps lines in memory so tests can assert on them. */
export function memoryLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const logger = createLogger({ format: "json", level: "debug", write: (l) => lines.push(l) });
  return Object.assign(logger, { lines });
}

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? (T[K] extends unknown[] ? T[K] : DeepPartial<T[K]>) : T[K] };

/** A LoadedConfig for an in-process hive: temp data dir, port 0, short timings. */
export function testConfig(dataDir: string, overrides: DeepPartial<HiveConfig> = {}, env: Record<string, string> = {}): LoadedConfig {
  const loaded = loadConfig({ env: { HOME: dataDir, RBEE_DATA_DIR: dataDir, ...env }, flags: { addr: "127.0.0.1:0" } });
  const base = loaded.config as unknown as Record<string, Record<string, unknown>>;
  for (const [section, values] of Object.entries(overrides)) Object.assign(base[section]!, values);
  return loaded;
}

export async function waitFor<T>(fn: () => T | Promise<T>, { timeoutMs = 5000, intervalMs = 10, what = "condition" } = {}): Promise<NonNullable<T>> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (performance.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await Bun.sleep(intervalMs);
  }
}

/** Await a promise that must reject with a HiveError, and return that error. */
export async function rejection(p: Promise<unknown>): Promise<HiveError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(HiveError);
    return e as HiveError;
  }
  throw new Error("expected a rejection");
}

/** True while the process exists and is not a zombie. */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}

/** Members of a process group that are alive and not zombies (from /proc; Linux). */
export function groupMembers(pgid: number): number[] {
  const members: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // rest[0] = state, rest[2] = pgrp
      if (Number(rest[2]) === pgid && rest[0] !== "Z") members.push(Number(entry));
    } catch {
      // gone while we looked
    }
  }
  return members;
}

/** SIGKILL a whole process group (every worker leads its own); a group that is gone is fine. */
export function killGroup(pgid: number | null | undefined): void {
  if (!pgid || pgid <= 1) return;
  try {
    process.kill(-pgid, "SIGKILL");
  } catch {
    // no such group: the expected case after a clean stop
  }
}

/**
 * The exit code of `proc`, or a thrown error when it has not exited within `ms` (a hang guard,
 * not a speed limit): the process is SIGKILLed first so nothing is left running.
 */
export async function exitWithin(proc: { exited: Promise<number>; kill(signal?: number | NodeJS.Signals): void }, ms: number, what = "process"): Promise<number> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const overrun = new Promise<"overrun">((resolve) => (timer = setTimeout(() => resolve("overrun"), ms)));
  const outcome = await Promise.race([proc.exited, overrun]);
  clearTimeout(timer);
  if (outcome === "overrun") {
    proc.kill("SIGKILL");
    await proc.exited;
    throw new Error(`${what} did not exit within ${ms} ms`);
  }
  return outcome;
}

export { defaultConfig };

/** The models area's config values (provisioner, tracker) from the default config; tests spread them and override a few. */
export const modelDefaults = () => modelSettings(defaultConfig());

/** A model_ref parsed the way the edge parses it (the services below take the parsed value). */
export function hfRef(modelRef: string): HfModelRef {
  const ref = parseModelRef(modelRef);
  if (ref.provider !== "hf") throw new Error(`${modelRef} is not an hf: ref`);
  return ref;
}

export function fileRef(modelRef: string): FileModelRef {
  const ref = parseModelRef(modelRef);
  if (ref.provider !== "file") throw new Error(`${modelRef} is not a file: ref`);
  return ref;
}

import { startHive, type Hive, type HiveOverrides } from "../src/hive.ts";
import { mkdirSync } from "node:fs";
import { tinyLlamaSpec, writeGguf } from "./fixtures/gguf-writer.ts";

export interface TestHive extends Hive {
  dataDir: string;
  modelsDir: string;
  /** A small model file under the models dir, as a file: model_ref. */
  modelRef: string;
  token?: string;
  /** Every log line the hive wrote (JSON). */
  logs: string[];
  api(path: string, init?: RequestInit & { json?: unknown; auth?: boolean }): Promise<Response>;
  spawn(body?: Record<string, unknown>): Promise<{ worker_id: string; url: string; state: string }>;
  waitState(id: string, pred: (w: any) => boolean, what?: string, timeoutMs?: number): Promise<any>;
  close(): Promise<void>;
}

/** An in-process hive on 127.0.0.1:0 whose default worker is the fake worker. */
export async function startTestHive(
  opts: {
    config?: DeepPartial<HiveConfig>;
    workerEnv?: Record<string, string>;
    token?: string;
    env?: Record<string, string>;
    overrides?: HiveOverrides;
    /** Runs on the fresh data dir before the hive starts (e.g. to leave a previous hive's state). */
    beforeStart?: (loaded: LoadedConfig) => void;
  } = {},
): Promise<TestHive> {
  const dir = tempDir();
  const loaded = testConfig(
    dir.path,
    {
      ...opts.config,
      workers: { binary: FAKE_WORKER, silent: true, stop_grace_s: 2, port_min: 20000 + Math.floor(Math.random() * 20000), port_max: 65000, ...opts.config?.workers },
      monitor: { interval_s: 3600, ...opts.config?.monitor },
      restart: { enabled: false, ...opts.config?.restart },
      shutdown: { worker_grace_s: 1, total_timeout_s: 5, ...opts.config?.shutdown },
      // The fake worker takes next to nothing: no 1 GiB overhead per worker, no RAM kept back.
      resources: { overhead_mb: 0, ram_reserve_mb: 0, ...opts.config?.resources },
    },
    { ...(opts.token ? { LLORCH_API_TOKEN: opts.token } : {}), ...opts.env },
  );
  const modelsDir = loaded.resolved.modelsDir;
  mkdirSync(modelsDir, { recursive: true });
  writeGguf(join(modelsDir, "tiny.gguf"), tinyLlamaSpec());
  // Detection tools are looked up on this empty PATH: a test hive never runs the host's real
  // nvidia-smi (tests that want GPUs pass fake ones through overrides.resources).
  const noTools = join(dir.path, "no-tools");
  mkdirSync(noTools);
  const logger = memoryLogger();
  let hive: Hive;
  try {
    opts.beforeStart?.(loaded);
    hive = await startHive(loaded, logger, { echo: null, workerEnv: opts.workerEnv, resources: { inventory: { env: { PATH: noTools } } }, ...opts.overrides });
  } catch (e) {
    dir.cleanup();
    throw e;
  }
  // Every worker leads its own process group: remember them so close() leaves none behind,
  // even when a test failed before stopping its workers.
  const workerGroups = new Set<number>();
  hive.bus.subscribe((e) => {
    if (e.type === "spawned" && typeof e.data.pid === "number") workerGroups.add(e.data.pid);
  });
  const api: TestHive["api"] = (path, init = {}) => {
    const headers = new Headers(init.headers);
    if (init.json !== undefined) headers.set("content-type", "application/json");
    if (opts.token && init.auth !== false) headers.set("authorization", `Bearer ${opts.token}`);
    return fetch(hive.url + path, {
      ...init,
      method: init.method ?? (init.json !== undefined ? "POST" : "GET"),
      headers,
      body: init.json !== undefined ? JSON.stringify(init.json) : init.body,
    });
  };
  const modelRef = `file:${join(modelsDir, "tiny.gguf")}`;
  return Object.assign(hive, {
    dataDir: dir.path,
    modelsDir,
    modelRef,
    token: opts.token,
    logs: logger.lines,
    api,
    async spawn(body: Record<string, unknown> = {}) {
      const res = await api("/v1/workers/spawn", { json: { model_ref: modelRef, backend: "cpu", device: 0, ...body } });
      if (res.status !== 200) throw new Error(`spawn failed: ${res.status} ${await res.text()}`);
      return (await res.json()) as { worker_id: string; url: string; state: string };
    },
    async waitState(id: string, pred: (w: any) => boolean, what = "worker state", timeoutMs = 5000) {
      return waitFor(
        async () => {
          const res = await api(`/v1/workers/${id}`);
          if (res.status !== 200) return undefined;
          const w: any = await res.json();
          return pred(w) ? w : undefined;
        },
        { what, timeoutMs },
      );
    },
    async close() {
      try {
        await hive.shutdown.run("test done");
      } finally {
        for (const pgid of workerGroups) killGroup(pgid);
        dir.cleanup();
      }
    },
  });
}
