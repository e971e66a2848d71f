/**
 * Small process tools of the supervisor: find the executable, build the environment, signal a
 * process group. Imports nothing outside src/shared.
 */
import { accessSync, constants as fsConstants, statSync } from "node:fs";
import { constants as osConstants } from "node:os";
import { resolve as resolvePath } from "node:path";
import { HiveError, errorMessage } from "./errors.ts";

export function isErrno(e: unknown, code: string): boolean {
  return typeof e === "object" && e !== null && (e as { code?: unknown }).code === code;
}

/** Signal number → name ("SIGKILL"); Bun's onExit may report either form. */
export function signalName(sig: NodeJS.Signals | number | null | undefined): string | null {
  if (sig === null || sig === undefined) return null;
  if (typeof sig === "string") return sig;
  for (const [name, num] of Object.entries(osConstants.signals)) if (num === sig) return name;
  return `SIG${sig}`;
}

/**
 * Resolve command[0] to an absolute executable path, or throw WORKER_BINARY_NOT_FOUND.
 * Checked before spawning so the caller gets a clear, synchronous error instead of an ENOENT
 * from deep inside Bun.
 */
export function resolveExecutable(cmd: string | undefined, cwd: string, PATH: string | undefined): string {
  if (!cmd) throw new HiveError(500, "WORKER_BINARY_NOT_FOUND", "worker command is empty");
  if (cmd.includes("/")) {
    const abs = resolvePath(cwd, cmd);
    let isFile = false;
    try {
      isFile = statSync(abs).isFile();
    } catch {
      throw new HiveError(500, "WORKER_BINARY_NOT_FOUND", `worker binary not found: ${abs}`, { path: abs });
    }
    if (!isFile) {
      throw new HiveError(500, "WORKER_BINARY_NOT_FOUND", `worker binary is not a regular file: ${abs}`, { path: abs });
    }
    try {
      accessSync(abs, fsConstants.X_OK);
    } catch {
      throw new HiveError(500, "WORKER_BINARY_NOT_FOUND", `worker binary is not executable: ${abs}`, { path: abs });
    }
    return abs;
  }
  const found = Bun.which(cmd, PATH === undefined ? undefined : { PATH });
  if (!found) {
    throw new HiveError(500, "WORKER_BINARY_NOT_FOUND", `worker binary "${cmd}" not found on PATH`, { path: cmd });
  }
  return found;
}

/** process.env overlaid with `extra`; undefined values removed. */
export function buildEnv(extra: Record<string, string | undefined> | undefined): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, ...extra })) if (v !== undefined) env[k] = v;
  return env;
}

export function requireDirectory(cwd: string, id: string): void {
  try {
    if (!statSync(cwd).isDirectory()) throw new Error("not a directory");
  } catch (e) {
    throw new HiveError(500, "WORKER_SPAWN_FAILED", `cannot spawn ${id}: bad working directory ${cwd}: ${errorMessage(e)}`);
  }
}

export function tryKill(pid: number, sig: NodeJS.Signals): boolean {
  try {
    process.kill(pid, sig);
    return true;
  } catch {
    return false;
  }
}

/**
 * Signal the whole group; ESRCH (group gone) is ignored, then `fallback` signals the leader alone
 * in case it still lives. Returns false if nothing was signalled.
 */
export function signalGroup(pgid: number, sig: NodeJS.Signals, fallback: () => boolean): boolean {
  try {
    process.kill(-pgid, sig);
    return true;
  } catch (e) {
    if (!isErrno(e, "ESRCH")) return false;
    try {
      return fallback();
    } catch {
      return false;
    }
  }
}
