/**
 * The models area, built from the config: catalog (checked, moved aside and rebuilt when damaged),
 * provisioner, download tracker (its job lifecycle published on the event bus), model service and
 * the resolver the spawn path uses.
 */
import type { LoadedConfig } from "../config.ts";
import type { HiveBus } from "../events.ts";
import type { Clock } from "../shared/clock.ts";
import type { Logger } from "../shared/logger.ts";
import type { FetchLike } from "../shared/http-client.ts";
import type { ModelResolver } from "../shared/model-source.ts";
import { openCatalog } from "./model-catalog/open.ts";
import type { ModelCatalog } from "./model-catalog/catalog.ts";
import type { ParsedModelRef } from "./model-catalog/model-ref.ts";
import { rebuildCatalogFromCache } from "./provisioner/rebuild-catalog.ts";
import { Provisioner, type WalkFs } from "./provisioner/provisioner.ts";
import type { StatfsLike } from "./provisioner/options.ts";
import { DownloadTracker } from "./download-tracker.ts";
import type { DownloadJobStore } from "./download-tracker/job-store.ts";
import { ModelService, type ModelUsers } from "./model-service.ts";
import { createModelResolver } from "./model-resolver.ts";
import { modelSettings } from "./settings.ts";
import { catalogMetadata } from "../resources/model-footprint.ts";

export interface ModelsAreaDeps {
  loaded: LoadedConfig;
  bus: HiveBus;
  clock: Clock;
  logger: Logger;
  /** Who uses a model (deletion answers 409 while a worker does). */
  users: ModelUsers;
  fetch?: FetchLike;
  statfs?: (path: string) => StatfsLike;
  walkFs?: WalkFs;
  /** Where unfinished downloads are saved for a restarted hive (the hive's state file). */
  downloadStore?: DownloadJobStore;
}

export interface ModelsArea {
  catalog: ModelCatalog;
  tracker: DownloadTracker;
  service: ModelService;
  resolver: ModelResolver<ParsedModelRef>;
}

/** Throws what openCatalog throws when the catalog cannot be opened even after moving it aside. */
export function createModelsArea(d: ModelsAreaDeps): ModelsArea {
  const { config, secrets, resolved } = d.loaded;
  const catalog = openCatalog({
    path: resolved.catalogPath,
    modelsDir: resolved.modelsDir,
    clock: d.clock,
    logger: d.logger,
    rebuild: (fresh) => rebuildCatalogFromCache(fresh, resolved.modelsDir, d.logger),
  });
  const settings = modelSettings(config);
  const provisioner = new Provisioner({
    ...settings.provisioner,
    modelsDir: resolved.modelsDir,
    token: secrets.hfToken,
    fetch: d.fetch,
    statfs: d.statfs,
    walkFs: d.walkFs,
    logger: d.logger,
    onPartRetry: (r) => d.bus.publish("download_retried", r),
  });
  const tracker = new DownloadTracker({
    catalog,
    provisioner,
    clock: d.clock,
    logger: d.logger,
    ...settings.tracker,
    store: d.downloadStore,
    // The GGUF header goes into the catalog with the model; a file that is not GGUF is refused.
    describe: catalogMetadata,
    // Downloads show up on the one event bus too (events stream, metrics).
    onLifecycle: (job, event) => {
      const base = { download_id: job.id, model_ref: job.model_ref, revision: job.revision };
      if (event.stage === "started") d.bus.publish("download_started", base);
      else if (event.stage === "complete") d.bus.publish("download_complete", { ...base, local_path: event.local_path, bytes: job.bytes_total });
      else if (event.stage === "error") d.bus.publish("download_failed", { ...base, code: event.code, message: event.message });
    },
  });
  const service = new ModelService({
    catalog,
    tracker,
    registry: d.users,
    modelsDir: resolved.modelsDir,
    logger: d.logger,
    onRemoved: (r) => d.bus.publish("model_deleted", { model_ref: r.model_ref, freed_bytes: r.freed_bytes }),
  });
  const resolver = createModelResolver({ modelsDir: resolved.modelsDir, allowedRoots: config.paths.allowed_model_roots, source: service });
  return { catalog, tracker, service, resolver };
}
