/** Shared test plumbing: temp dirs, free ports, an in-process hive on 127.0.0.1. */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { defaultConfig, loadConfig, type HiveConfig, type LoadedConfig } from "../src/config.ts";
import { createLogger, type Logger } from "../src/shared/logger.ts";

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

export { defaultConfig };
