/**
 * Where a worker executable is found. Lookup order: a path given by the profile, then (for the
 * llm-worker-rbee binary) RBEE_WORKER_BINARY / `[workers] binary`, then beside the hive
 * executable, then PATH. A missing binary is a clear 500 naming every place looked at.
 */
import { accessSync, constants, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { DEFAULT_WORKER_PROFILE, type HiveConfig, type WorkerProfile } from "../config.ts";
import { HiveError } from "../shared/errors.ts";

export interface BinaryLookup {
  profileName: string;
  /** The profile's `binary`: a bare name or a path. */
  binary: string;
  /** RBEE_WORKER_BINARY / `[workers] binary` ("" = unset). */
  configuredBinary: string;
  /** Directory of the hive executable. */
  execDir: string;
}

/** A profile's binary under this hive's config, looked up beside this executable by default. */
export function binaryFor(config: HiveConfig, profileName: string, profile: WorkerProfile, execDir = dirname(process.execPath)): string {
  return resolveWorkerBinary({ profileName, binary: profile.binary, configuredBinary: config.workers.binary, execDir });
}

export function resolveWorkerBinary({ profileName, binary, configuredBinary, execDir }: BinaryLookup): string {
  const tried: string[] = [];
  const usable = (p: string) => {
    tried.push(p);
    try {
      accessSync(p, constants.X_OK);
      return statSync(p).isFile();
    } catch {
      return false;
    }
  };
  if (binary.includes("/")) {
    if (usable(binary)) return binary;
  } else if (binary === DEFAULT_WORKER_PROFILE.binary && configuredBinary) {
    // RBEE_WORKER_BINARY is where llm-worker-rbee lives, for every profile running it.
    if (usable(configuredBinary)) return configuredBinary;
  } else {
    const beside = join(execDir, binary);
    if (usable(beside)) return beside;
    const onPath = Bun.which(binary);
    if (onPath) return onPath;
    tried.push(`${binary} on PATH`);
  }
  throw new HiveError(
    500,
    "WORKER_BINARY_NOT_FOUND",
    `worker binary for profile "${profileName}" not found or not executable (looked at: ${tried.join(", ")}); set RBEE_WORKER_BINARY or [workers] binary`,
  );
}
