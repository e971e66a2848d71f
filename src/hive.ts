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
import { serve, type HiveServer } from "./server.ts";
import { ShutdownCoordinator } from "./shutdown.ts";
import { createHiveBus, type HiveBus } from "./events.ts";
import { WorkerRegistry } from "./workers/registry.ts";
import { PortAllocator } from "./workers/port-allocator.ts";
import { RestartPolicy } from "./workers/restart.ts";
import { createModelResolver } from "./models/model-resolver.ts";
import { QueenNotifier } from "./queen/queen-client.ts";
import { WorkerLifecycleManager } from "./workers/worker-lifecycle.ts";
import { HealthMonitor } from "./workers/monitor.ts";
import { workersController } from "./http/workers.ts";
import { eventsController } from "./http/events.ts";
import { metricsController } from "./http/metrics.ts";
import { HiveMetrics } from "./metrics.ts";
import type { ServerRef } from "./http/server-ref.ts";
import { VERSION } from "./version.ts";
import type { ModelCatalog } from "./models/model-catalog/catalog.ts";
import { openCatalog } from "./models/model-catalog/open.ts";
import { rebuildCatalogFromCache } from "./models/provisioner/rebuild-catalog.ts";
import { Provisioner, type WalkFs } from "./models/provisioner/provisioner.ts";
import { DownloadTracker } from "./models/download-tracker.ts";
import { modelSettings } from "./models/settings.ts";
import { ModelService } from "./models/model-service.ts";
import { modelsController } from "./http/models.ts";

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
}

export async function startHive(loaded: LoadedConfig, logger: Logger, o: HiveOverrides = {}): Promise<Hive> {
  const { config, secrets, resolved } = loaded;
  // loadConfig refuses this already; checked again because an open bind without a token must never happen.
  const violation = bindPolicyViolation(resolved.host, secrets.apiToken);
  if (violation) throw new StartupError(violation);

  prepareDir(resolved.dataDir, "data dir");
  prepareDir(resolved.modelsDir, "models dir");
  prepareDir(resolved.logsDir, "logs dir");

  const clock = o.clock ?? systemClock;
  const shutdown = new ShutdownCoordinator(logger, config.shutdown.total_timeout_s * 1000);
  const bus = createHiveBus(config.server.events_buffer, () => clock.now());
  const registry = new WorkerRegistry(logger, () => clock.now(), config.workers.exited_retention_s * 1000);
  const http = new HttpClient(o.fetch);
  const ports = new PortAllocator({
    min: config.workers.port_min,
    max: config.workers.port_max,
    // Upstream workers bind 0.0.0.0, and a wildcard bind fails when any local address holds the
    // port. Probing the worker host itself would break when RBEE_WORKER_HOST names an address
    // (NAT, DNS) that is not bindable here. Besides the bind, every port any TCP socket uses
    // (TIME_WAIT included, /proc/net/tcp{,6}) is skipped: see port-allocator.ts.
    probeHosts: ["0.0.0.0"],
    now: () => clock.monotonic(),
  });
  let catalog: ModelCatalog;
  try {
    // A damaged models.db is moved aside and rebuilt from the models dir (see model-catalog/open.ts).
    catalog = openCatalog({
      path: resolved.catalogPath,
      modelsDir: resolved.modelsDir,
      clock,
      logger,
      rebuild: (fresh) => rebuildCatalogFromCache(fresh, resolved.modelsDir, logger),
    }).catalog;
  } catch (e) {
    throw new StartupError(`cannot open the model catalog ${resolved.catalogPath}: ${errorMessage(e)}`);
  }
  const settings = modelSettings(config);
  const provisioner = new Provisioner({
    ...settings.provisioner,
    modelsDir: resolved.modelsDir,
    token: secrets.hfToken,
    fetch: o.fetch,
    statfs: o.statfs,
    walkFs: o.walkFs,
    logger,
  });
  const tracker = new DownloadTracker({
    catalog,
    provisioner,
    clock,
    logger,
    ...settings.tracker,
    // Downloads show up on the one event bus too (events stream, metrics).
    onLifecycle: (job, event) => {
      const base = { download_id: job.id, model_ref: job.model_ref, revision: job.revision };
      if (event.stage === "started") bus.publish("download_started", base);
      else if (event.stage === "complete") bus.publish("download_complete", { ...base, local_path: event.local_path, bytes: job.bytes_total });
      else if (event.stage === "error") bus.publish("download_failed", { ...base, code: event.code, message: event.message });
    },
  });
  const models = new ModelService({ catalog, tracker, registry, modelsDir: resolved.modelsDir, logger });
  let callbackBase = "";
  const lifecycle = new WorkerLifecycleManager({
    config,
    logsDir: resolved.logsDir,
    registry,
    bus,
    logger,
    spawner: o.spawner ?? spawnSupervised,
    clock,
    http,
    ports,
    models: createModelResolver({ modelsDir: resolved.modelsDir, allowedRoots: config.paths.allowed_model_roots, source: models }),
    restartPolicy: new RestartPolicy(config.restart, o.random),
    queen: new QueenNotifier(http, logger, config.queen.callback_url, secrets.apiToken),
    callbackBase: () => callbackBase,
    workerEnv: o.workerEnv,
    echo:
      o.echo === null || (o.echo === undefined && config.workers.silent)
        ? undefined
        : (o.echo ?? ((line: string) => process.stderr.write(line + "\n"))),
  });
  const monitor = new HealthMonitor({ config: config.monitor, registry, lifecycle, http, bus, clock, logger });

  const metrics = new HiveMetrics(bus, registry);
  const serverRef: ServerRef = { current: null };
  const app = createApp({
    config,
    logger,
    apiToken: secrets.apiToken,
    callbackAccess: (path, body) => lifecycle.callbackAccess(path, body),
    catalogHealth: () => catalog.health(),
    controllers: [
      workersController(lifecycle, registry),
      metricsController(metrics),
      modelsController(models, tracker, { keepAliveMs: config.server.sse_keepalive_s * 1000, shutdown: shutdown.signal, server: serverRef }),
      eventsController(bus, { keepAliveMs: config.server.sse_keepalive_s * 1000, shutdown: shutdown.signal, server: serverRef }),
    ],
  });

  let server: HiveServer;
  try {
    server = serve((request) => app.fetch(request), {
      host: resolved.host,
      port: resolved.port,
      bodyLimitBytes: config.server.body_limit_bytes,
      logger,
    });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE") {
      throw new StartupError(`cannot bind ${config.server.addr}: the address is already in use (is another rbee-hive running?)`);
    }
    throw new StartupError(`cannot bind ${config.server.addr}: ${(e as Error).message}`);
  }
  serverRef.current = server.server;
  // Workers run on this host: they reach us on loopback unless we bound one specific address.
  const reachableHost = resolved.host === "0.0.0.0" || resolved.host === "::" ? "127.0.0.1" : resolved.host;
  callbackBase = `http://${reachableHost.includes(":") ? `[${reachableHost}]` : reachableHost}:${server.server.port}`;
  monitor.start();

  // Teardown order: stop accepting (open streams end through shutdown.signal), stop the monitor so
  // nothing is restarted, stop every worker in parallel, then close storage.
  shutdown.signal.addEventListener("abort", () => lifecycle.beginShutdown(), { once: true });
  shutdown.register("http server", async () => {
    const graceful = server.stop(false);
    const timeout = Bun.sleep(1000).then(() => "timeout" as const);
    if ((await Promise.race([graceful, timeout])) === "timeout") await server.stop(true);
  });
  shutdown.register("monitor", () => monitor.stop());
  shutdown.register("workers", () => lifecycle.stopAll(config.shutdown.worker_grace_s * 1000));
  shutdown.register("downloads", () => tracker.stopAll()); // partial files stay for resume
  shutdown.register("catalog", () => catalog.close());
  shutdown.registerForce(() => lifecycle.killAll());

  logger.info("rbee-hive listening", {
    url: server.url,
    version: VERSION,
    data_dir: resolved.dataDir,
    models_dir: resolved.modelsDir,
    auth: secrets.apiToken ? tokenFingerprint(secrets.apiToken) : "off (loopback only)",
    loopback: isLoopbackHost(resolved.host),
    config: loaded.source,
  });
  return { server, shutdown, url: server.url, registry, lifecycle, monitor, bus, catalog, tracker };
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
