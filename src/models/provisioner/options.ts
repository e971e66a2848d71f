/**
 * What a Provisioner is built from: the values of config keys (required: their defaults live in
 * the config schema, src/config.ts, and nowhere else), and internal tuning that is not a config
 * key (TUNING; tests and the bench override some of it).
 */
import type { Logger } from "../../shared/logger.ts";
import type { FetchFn } from "./hub-client.ts";
import type { WalkFs, WalkLimits } from "./local-model.ts";

/** `[downloads]` and `paths.allowed_model_roots`, in the units the provisioner uses. */
export interface ProvisionerSettings {
  /** Hub base URL (`downloads.hf_endpoint`, env HF_ENDPOINT). */
  endpoint: string;
  /** Extra roots a `file:` model may live under; modelsDir is always allowed. */
  allowedRoots: string[];
  /** GGUF pick order of a plain `hf:org/repo`. */
  quantPreference: string[];
  /** Range part size. */
  partSizeBytes: number;
  /** Most connections (streams of parts) at once per file. */
  maxParallelParts: number;
  /** Retries per request / per part without progress. */
  maxRetries: number;
  /** A part that receives nothing this long is aborted and retried. */
  stallTimeoutMs: number;
  /** Free space that must remain after the download. */
  diskMarginBytes: number;
}

export interface ProvisionerTuning {
  /**
   * Connections opened at the start of a file. 1: one stream reads the file in order (hashed from
   * memory as it arrives); more are added up to maxParallelParts while the rate per connection
   * stays below addPartBelowBytesPerSec and each addition raises the total rate.
   */
  initialParallelParts: number;
  /** Add a connection while each one is slower than this (bytes/s). */
  addPartBelowBytesPerSec: number;
  /** How often the rate is measured to decide on adding a connection. */
  parallelProbeMs: number;
  /** First backoff delay, doubled per retry (±25 % jitter). */
  retryBaseMs: number;
  /** Backoff cap. */
  retryMaxMs: number;
  /** Cap on a server's Retry-After. */
  retryAfterMaxMs: number;
  /** Timeout of one hub API request (file bodies use the stall detector instead). */
  requestTimeoutMs: number;
  /** Re-hash blobs found in the cache (not written by this process) before use. */
  verifyExistingBlobs: boolean;
  /** Whole-file re-downloads after a checksum mismatch. */
  maxChecksumRetries: number;
  /** How often part progress is saved for resume. */
  stateFlushIntervalMs: number;
  /** Background fdatasync cadence while downloading (keeps the disk busy during the transfer). */
  syncEveryBytes: number;
  /** Reserve each file's disk blocks up front with fallocate(2) (Linux; else sparse). */
  preallocate: boolean;
}

export const TUNING: ProvisionerTuning = {
  initialParallelParts: 1,
  addPartBelowBytesPerSec: 100e6,
  parallelProbeMs: 1000,
  retryBaseMs: 500,
  retryMaxMs: 30_000,
  retryAfterMaxMs: 60_000,
  requestTimeoutMs: 30_000,
  verifyExistingBlobs: true,
  maxChecksumRetries: 1,
  stateFlushIntervalMs: 25,
  syncEveryBytes: 32 * 1024 * 1024,
  preallocate: true,
};

export interface StatfsLike {
  bavail: number | bigint;
  bsize: number | bigint;
}

export interface ProvisionerOptions extends ProvisionerSettings, Partial<ProvisionerTuning> {
  /** The models dir = the HF cache dir (the daemon's: `<data dir>/models`). */
  modelsDir: string;
  /** Hub token (env HF_TOKEN); only ever sent to the endpoint's own origin. */
  token?: string;
  /** Injected fetch (default globalThis.fetch). */
  fetch?: FetchFn;
  /** Injected statfs (tests). Default fs.statfsSync. */
  statfs?: (path: string) => StatfsLike;
  /** Bounds of a `file:` directory walk (default DEFAULT_WALK_LIMITS of local-model.ts). */
  walkLimits?: Partial<WalkLimits>;
  /** File system calls of the `file:` walk (tests gate them). Default node:fs/promises. */
  walkFs?: WalkFs;
  /** Clock of the walk's time bound (ms). Default Date.now. */
  now?: () => number;
  logger?: Logger;
  /** Told of each retried ranged request of a file (`stalled`: nothing arrived for stallTimeoutMs). */
  onPartRetry?: (retry: { file: string; stalled: boolean }) => void;
}

/** The tuning in effect: TUNING with what the options set (an option left undefined keeps TUNING's). */
export function tuningOf(opts: Partial<ProvisionerTuning>): ProvisionerTuning {
  const out = { ...TUNING } as Record<keyof ProvisionerTuning, unknown>;
  for (const key of Object.keys(TUNING) as Array<keyof ProvisionerTuning>) {
    if (opts[key] !== undefined) out[key] = opts[key];
  }
  return out as ProvisionerTuning;
}
