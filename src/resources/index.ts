/**
 * Host resources, assembled: the device inventory, the memory ledger, the spawn preflight, the
 * model footprints and the spawn admission built on them, from the config. The daemon builds one
 * set and hands the admission to the spawn path and the rest to the routes (src/http/resources.ts).
 */
import type { HiveConfig } from "../config.ts";
import type { Clock } from "../shared/clock.ts";
import { notFound } from "../shared/errors.ts";
import type { Logger } from "../shared/logger.ts";
import { HostAdmission } from "./admission.ts";
import { DeviceInventory, type InventoryDeps } from "./device-inventory.ts";
import { MemoryLedger } from "./memory-ledger.ts";
import type { MemoryEstimate } from "./memory-estimate.ts";
import { ModelFootprints, type FootprintSource } from "./model-footprint.ts";
import { resourceSettings, SpawnPreflight, type PreflightDeps } from "./preflight.ts";

export interface HostResourcesOptions {
  config: HiveConfig;
  modelsDir: string;
  logger: Logger;
  clock?: Clock;
  /** Test seams: tool runner, environment, platform, file readers, statfs. */
  inventory?: Partial<Omit<InventoryDeps, "modelsDir" | "logger" | "cacheTtlMs" | "toolTimeoutMs">>;
  ramUseOf?: PreflightDeps["ramUseOf"];
  groupOf?: PreflightDeps["groupOf"];
}

export function createHostResources(o: HostResourcesOptions) {
  const settings = resourceSettings(o.config);
  const inventory = new DeviceInventory({
    ...o.inventory,
    modelsDir: o.modelsDir,
    logger: o.logger,
    clock: o.clock,
    cacheTtlMs: o.config.resources.cache_ttl_s * 1000,
    toolTimeoutMs: o.config.resources.tool_timeout_s * 1000,
  });
  const ledger = new MemoryLedger();
  const preflight = new SpawnPreflight({ inventory, ledger, settings, logger: o.logger, clock: o.clock, ramUseOf: o.ramUseOf, groupOf: o.groupOf });
  const footprints = new ModelFootprints();
  // What the spawn path sees of all this (src/shared/spawn-admission.ts).
  const admission = new HostAdmission({ inventory, preflight, ledger, footprints, logger: o.logger });
  return { settings, inventory, ledger, preflight, footprints, admission };
}
export type HostResourceServices = ReturnType<typeof createHostResources>;

/**
 * The estimate of a catalog model, by its ref: 404 MODEL_NOT_FOUND when the catalog does not have
 * it (GET /v1/capacity answers for models on this host).
 */
export function catalogEstimator(
  lookup: (modelRef: string, revision?: string) => FootprintSource | null,
  footprints: ModelFootprints,
  preflight: SpawnPreflight,
): (modelRef: string, opts?: { revision?: string; context?: number }) => Promise<MemoryEstimate> {
  return async (modelRef, opts = {}) => {
    const entry = lookup(modelRef, opts.revision);
    if (!entry) throw notFound("MODEL_NOT_FOUND", `model ${modelRef} is not in the catalog of this host (download it first)`, { model_ref: modelRef });
    return preflight.estimate(await footprints.shape(entry), opts.context);
  };
}
