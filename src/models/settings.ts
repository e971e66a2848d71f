/**
 * The config values the models area runs with, in the units its services take. The defaults are
 * the config schema's (src/config.ts); the services have none of their own for these keys.
 */
import type { HiveConfig } from "../config.ts";
import type { DownloadTrackerOptions } from "./download-tracker.ts";
import type { ProvisionerSettings } from "./provisioner/options.ts";

const MiB = 1024 * 1024;

export interface ModelSettings {
  provisioner: ProvisionerSettings;
  tracker: Pick<DownloadTrackerOptions, "progressIntervalMs" | "finishedJobTtlMs">;
}

export function modelSettings(config: HiveConfig): ModelSettings {
  const dl = config.downloads;
  return {
    provisioner: {
      endpoint: dl.hf_endpoint,
      allowedRoots: config.paths.allowed_model_roots,
      quantPreference: dl.quant_preference,
      partSizeBytes: Math.round(dl.part_size_mb * MiB),
      maxParallelParts: dl.parallel_parts,
      maxRetries: dl.max_retries,
      stallTimeoutMs: dl.stall_timeout_s * 1000,
      diskMarginBytes: Math.round(dl.disk_margin_mb * MiB),
    },
    tracker: {
      progressIntervalMs: dl.progress_interval_s * 1000,
      finishedJobTtlMs: dl.finished_ttl_s * 1000,
    },
  };
}
