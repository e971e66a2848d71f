/**
 * Builds the daemon from a loaded config: services, app, socket and teardown order.
 * main.ts owns the process (argv, signals, exit codes); this is what tests start in-process.
 */
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import type { LoadedConfig } from "./config.ts";
import { bindPolicyViolation, isLoopbackHost, tokenFingerprint } from "./shared/auth-min.ts";
import type { Logger } from "./shared/logger.ts";
import { describeFsError, errorMessage } from "./shared/errors.ts";
import { systemClock, type Clock } from "./shared/clock.ts";
import { spawnSupervised, type Spawner } from "./shared/daemon-lifecycle.ts";
import { HttpClient, type FetchLike } from "./shared/http-client.ts";
import { createApp } from "./app.ts";
import { serve, type HiveServer, type ServeOptions } from "./server.ts";
import { ShutdownCoordinator } from "./shutdown.ts";
import { createHiveBus, type HiveBus } from "./events.ts";
import { Observability } from "./observability.ts";
import type { OpenAuditFile } from "./shared/audit-logging.ts";
import { VERSION } from "./version.ts";
import { WorkerRegistry } from "./workers/registry.ts";
import { createWorkersArea } from "./workers/area.ts";
import type { WorkerLifecycleManager } from "./workers/worker-lifecycle.ts";
import type { HealthMonitor } from "./workers/monitor.ts";
import { createModelsArea, type ModelsArea, type ModelsAreaDeps } from "./models/area.ts";
import type { ModelCatalog } from "./models/model-catalog/catalog.ts";
import type { DownloadTracker } from "./models/download-tracker.ts";
import type { WalkFs } from "./models/provisioner/provisioner.ts";
import { workersController } from "./http/workers.ts";
import { eventsController } from "./http/events.ts";
import { metricsController } from "./http/metrics.ts";
import { modelsController } from "./http/models.ts";
import { proxyController } from "./http/proxy.ts";
import type { WorkerActivity } from "./workers/activity.ts";
import type { IdleReaper } from "./workers/timeout.ts";
import { resourcesController } from "./http/resources.ts";
import { catalogEstimator, createHostResources, type HostResourceServices, type HostResourcesOptions } from "./resources/index.ts";
import { profileSupport } from "./resources/backends.ts";
import type { ServerRef } from "./http/server-ref.ts";
import { shutdownController } from "./http/shutdown.ts";
import { exitPolicySpawner, openHiveState, takeOver, type HiveState } from "./hive-state.ts";
import { StateInUseError } from "./shared/state-db.ts";

export class StartupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StartupError";
  }
}

/** Seams for tests and benches; production uses the defaults. */
export interface HiveOverrides {
  spawner?: Spawner;
  clock?: Clock;
  fetch?: FetchLike;
  random?: () => number;
  /** Extra environment for every worker process. */
  workerEnv?: Record<string, string>;
  /** Echo worker output lines (default: to stderr unless [workers] silent). */
  echo?: ((line: string) => void) | null;
  /** Free-space probe of the models dir (tests). */
  statfs?: (path: string) => { bavail: number | bigint; bsize: number | bigint };
  /** File system calls of the `file:` model walk (tests gate them). */
  walkFs?: WalkFs;
  /** Seconds a connection may stay silent (tests shorten it to show streams outlive it). */
  idleTimeoutS?: number;
  /** How the audit log opens its files (tests: a slow disk). */
  auditFile?: OpenAuditFile;
  /** Device detection seams (tests: the tools' PATH, fake nvidia-smi; /proc readers). */
  resources?: Pick<HostResourcesOptions, "inventory" | "ramUseOf" | "groupOf">;
}

export interface Hive {
  server: HiveServer;
  shutdown: ShutdownCoordinator;
  url: string;
  registry: WorkerRegistry;
  lifecycle: WorkerLifecycleManager;
  monitor: HealthMonitor;
  bus: HiveBus;
  catalog: ModelCatalog;
  tracker: DownloadTracker;
  activity: WorkerActivity;
  idleReaper: IdleReaper;
  resources: HostResourceServices;
}

export async function startHive(loaded: LoadedConfig, logger: Logger, o: HiveOverrides = {}): Promise<Hive> {
  const { config, secrets, resolved } = loaded;
  // loadConfig refuses this already; checked again because an open bind without a token must never happen.
  const violation = bindPolicyViolation(resolved.host, secrets.apiToken);
  if (violation) throw new StartupError(violation);
  for (const [dir, what] of [[resolved.dataDir, "data dir"], [resolved.modelsDir, "models dir"], [resolved.logsDir, "logs dir"]] as const) prepareDir(dir, what);

  const clock = o.clock ?? systemClock;
  const state = openState(loaded, logger, clock);
  const keepWorkers = config.workers.keep_workers_on_exit;
  const shutdown = new ShutdownCoordinator(logger, config.shutdown.total_timeout_s * 1000);
  const bus = createHiveBus(config.server.events_buffer, () => clock.now());
  const registry = new WorkerRegistry(logger, () => clock.now(), config.workers.exited_retention_s * 1000);
  const http = new HttpClient(o.fetch);
  const models = openModels({ loaded, bus, clock, logger, users: registry, fetch: o.fetch, statfs: o.statfs, walkFs: o.walkFs, downloadStore: state.downloads });
  const resources = createHostResources({ config, modelsDir: resolved.modelsDir, logger, clock, ...o.resources });
  // Metrics and the audit trail subscribe before anything happens (the take-over below publishes).
  const observability = await openObservability({ loaded, bus, registry, logger, clock, http, inventory: resources.inventory, auditFile: o.auditFile }, state);
  let callbackBase = "";
  const { lifecycle, monitor, activity, passthrough, idleReaper } = createWorkersArea({
    loaded, registry, bus, clock, logger, http,
    models: models.resolver,
    admission: observability.countRefusals(resources.admission),
    spawner: exitPolicySpawner(o.spawner ?? spawnSupervised, keepWorkers),
    callbackBase: () => callbackBase,
    random: o.random,
    workerEnv: o.workerEnv,
    echo: workerEcho(o.echo, config.workers.silent),
    fetch: o.fetch,
    downloads: (downloadId, listener) => models.tracker.subscribe(downloadId, undefined, (e) => listener(e.data)),
  });

  // The previous hive's workers and downloads, before anything can take their ports.
  let listening!: () => void;
  const survived = await takeOver({
    loaded, state, registry, lifecycle, models, http, clock, logger,
    listening: new Promise<void>((resolve) => (listening = resolve)),
  });

  const serverRef: ServerRef = { current: null };
  const app = createApp({
    config,
    logger,
    apiToken: secrets.apiToken,
    callbackAccess: (path, body) => lifecycle.callbackAccess(path, body),
    onAuthEvent: observability.onAuthEvent,
    catalogHealth: () => models.catalog.health(),
    controllers: areaControllers({ config, lifecycle, registry, passthrough, activity, serverRef, observability, models, resources, bus, shutdown }),
  });
  let server: HiveServer;
  try {
    server = bind(loaded, logger, (request) => app.fetch(request), {
      idleTimeoutS: o.idleTimeoutS,
      onAnswered: observability.answered(() => app.routes),
    });
  } catch (e) {
    state.db.close(); // the next hive on this data dir must not find it locked
    await observability.audit?.close();
    throw e;
  }
  serverRef.current = server.server;
  observability.reportPreviousShutdown();
  callbackBase = callbackBaseFor(resolved.host, server.server.port!);
  listening();
  monitor.start();
  idleReaper.start();
  observability.startHeartbeat(secrets.apiToken);

  registerTeardown({
    shutdown, server, lifecycle, monitor, idleReaper, observability, models, keepWorkers,
    workerGraceMs: config.shutdown.worker_grace_s * 1000,
    closeState: () => {
      survived.stopPersisting();
      state.db.close();
    },
  });

  logListening(logger, loaded, server.url, survived.outcome.adopted.length);
  return { server, shutdown, url: server.url, registry, lifecycle, monitor, bus, catalog: models.catalog, tracker: models.tracker, resources, activity, idleReaper };
}

/** Where workers on this host call back: loopback unless the hive bound one specific address. */
function callbackBaseFor(boundHost: string, port: number): string {
  const reachableHost = boundHost === "0.0.0.0" || boundHost === "::" ? "127.0.0.1" : boundHost;
  return `http://${reachableHost.includes(":") ? `[${reachableHost}]` : reachableHost}:${port}`;
}

/** The start-up line: where the hive listens and how it is set up (the token only as a fingerprint). */
function logListening(logger: Logger, loaded: LoadedConfig, url: string, adopted: number): void {
  const { config, secrets, resolved } = loaded;
  logger.info("rbee-hive listening", {
    url,
    version: VERSION,
    data_dir: resolved.dataDir,
    models_dir: resolved.modelsDir,
    auth: secrets.apiToken ? tokenFingerprint(secrets.apiToken) : "off (loopback only)",
    loopback: isLoopbackHost(resolved.host),
    config: loaded.source,
    keep_workers_on_exit: config.workers.keep_workers_on_exit,
    workers_adopted: adopted,
  });
}

/** One controller per area, composed by createApp after auth. */
function areaControllers(d: {
  config: LoadedConfig["config"];
  lifecycle: Hive["lifecycle"];
  registry: WorkerRegistry;
  passthrough: Parameters<typeof proxyController>[0]["passthrough"];
  activity: WorkerActivity;
  serverRef: ServerRef;
  observability: Observability;
  models: ReturnType<typeof openModels>;
  resources: HostResourceServices;
  bus: HiveBus;
  shutdown: ShutdownCoordinator;
}) {
  const { config, lifecycle, registry, passthrough, activity, serverRef, observability, models, resources, bus, shutdown } = d;
  const streams = { keepAliveMs: config.server.sse_keepalive_s * 1000, shutdown: shutdown.signal, server: serverRef };
  return [
    workersController(lifecycle, registry),
    proxyController({ passthrough, activity, registry, server: serverRef }),
    metricsController(observability.metrics),
    modelsController(models.service, models.tracker, {
      ...streams,
      // The catalog keeps GGUF metadata: no file is read for a listed model's estimate.
      memoryEstimate: (entry) => resources.footprints.shape(entry).then((shape) => resources.preflight.estimate(shape).total_bytes, () => null),
    }),
    resourcesController({
      inventory: resources.inventory,
      preflight: resources.preflight,
      profiles: () => profileSupport(config),
      counts: () => ({ models: models.service.list().length, workers: registry.list().length }),
      estimateModel: catalogEstimator((ref, revision) => models.service.find(ref, revision), resources.footprints, resources.preflight),
    }),
    eventsController(bus, streams),
    shutdownController(() => shutdown.request("POST /v1/shutdown")),
  ];
}

interface TeardownParts {
  shutdown: ShutdownCoordinator;
  server: HiveServer;
  lifecycle: Hive["lifecycle"];
  monitor: Hive["monitor"];
  idleReaper: IdleReaper;
  observability: Observability;
  models: { tracker: DownloadTracker; catalog: ModelCatalog };
  keepWorkers: boolean;
  workerGraceMs: number;
  closeState: () => void;
}

function registerTeardown(d: TeardownParts): void {
  const { shutdown, server, lifecycle, monitor, idleReaper, observability, models, keepWorkers } = d;
  // Teardown order: refuse new work at once, stop accepting (open streams end through
  // shutdown.signal), stop the monitor so nothing is restarted, stop every worker in parallel,
  // stop downloads (partial files stay for resume), then close storage.
  shutdown.signal.addEventListener("abort", () => lifecycle.beginShutdown(), { once: true });
  shutdown.register("http server", async () => {
    const graceful = server.stop(false);
    const timeout = Bun.sleep(1000).then(() => "timeout" as const);
    if ((await Promise.race([graceful, timeout])) === "timeout") await server.stop(true);
  });
  shutdown.register("monitor", () => monitor.stop());
  shutdown.register("queen heartbeat", () => observability.stopHeartbeat());
  shutdown.register("idle reaper", () => idleReaper.stop());
  // keep_workers_on_exit: the workers stay running and saved, for the next hive to adopt.
  shutdown.register("workers", () => (keepWorkers ? lifecycle.detachAll() : lifecycle.stopAll(d.workerGraceMs)));
  shutdown.register("downloads", () => models.tracker.stopAll());
  shutdown.register("catalog", () => models.catalog.close());
  shutdown.register("state", () => d.closeState());
  // Last: the shutdown itself is audited and recorded for the next hive's metrics, then the audit log is synced.
  shutdown.register("audit", () => observability.recordShutdown(shutdown.progress, lifecycle.shutdownTally.summary()));
  shutdown.registerForce(() => {
    if (!keepWorkers) lifecycle.killAll();
  });
  shutdown.addSummary(() => lifecycle.shutdownTally.summary());
}

async function openObservability(deps: Parameters<typeof Observability.create>[0], state: HiveState): Promise<Observability> {
  const { resolved } = deps.loaded;
  try {
    return await Observability.create(deps);
  } catch (e) {
    state.db.close();
    throw new StartupError(`cannot use the audit dir ${resolved.auditDir}: ${describeFsError(e)}`);
  }
}

function openState(loaded: LoadedConfig, logger: Logger, clock: Clock): HiveState {
  try {
    return openHiveState(loaded, logger, clock);
  } catch (e) {
    throw new StartupError(e instanceof StateInUseError ? e.message : `cannot open the hive state ${loaded.resolved.dataDir}/state.db: ${errorMessage(e)}`);
  }
}

function openModels(deps: ModelsAreaDeps): ModelsArea {
  try {
    return createModelsArea(deps);
  } catch (e) {
    throw new StartupError(`cannot open the model catalog ${deps.loaded.resolved.catalogPath}: ${errorMessage(e)}`);
  }
}

/** Worker output echo: off when silent (RBEE_SILENT) or when a test passes null. */
function workerEcho(echo: HiveOverrides["echo"], silent: boolean): ((line: string) => void) | undefined {
  if (echo === null || (echo === undefined && silent)) return undefined;
  return echo ?? ((line: string) => process.stderr.write(line + "\n"));
}

/** Bind the socket; a taken address is one clear line (is another hive running?). */
function bind(
  loaded: LoadedConfig,
  logger: Logger,
  fetch: Parameters<typeof serve>[0],
  extra: Pick<ServeOptions, "idleTimeoutS" | "onAnswered">,
): HiveServer {
  const { config, resolved } = loaded;
  try {
    return serve(fetch, {
      host: resolved.host,
      port: resolved.port,
      bodyLimitBytes: config.server.body_limit_bytes,
      streamedBodyLimitBytes: config.workers.proxy_body_limit_mb * 1024 * 1024,
      ...extra,
      logger,
    });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EADDRINUSE") {
      throw new StartupError(`cannot bind ${config.server.addr}: the address is already in use (is another rbee-hive running?)`);
    }
    throw new StartupError(`cannot bind ${config.server.addr}: ${(e as Error).message}`);
  }
}

/** Create a directory the hive writes to and prove it is writable now, not at the first download. */
function prepareDir(dir: string, what: string): void {
  try {
    mkdirSync(dir, { recursive: true });
    const probe = `${dir}/.rbee-write-test-${process.pid}`;
    writeFileSync(probe, "");
    rmSync(probe);
  } catch (e) {
    throw new StartupError(`cannot use the ${what} ${dir}: ${describeFsError(e)}`);
  }
}
