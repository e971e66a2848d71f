/**
 * The workers area, built from the config: port allocator, restart policy, lifecycle manager
 * (spawn, readiness, exits, restarts), the health monitor, and what workers are doing: activity
 * (in flight, slots, queue), the pass-through of requests to them, the idle reaper and the relay
 * of their loading progress. The registry is passed in: the models area reads it too (a model in
 * use cannot be deleted).
 */
import { resolveProfile, type LoadedConfig } from "../config.ts";
import type { HiveBus } from "../events.ts";
import type { Clock } from "../shared/clock.ts";
import type { Spawner } from "../shared/daemon-lifecycle.ts";
import type { FetchLike, HttpClient } from "../shared/http-client.ts";
import type { Logger } from "../shared/logger.ts";
import type { ModelResolver } from "../shared/model-source.ts";
import type { SpawnAdmission } from "../shared/spawn-admission.ts";
import { QueenNotifier } from "../queen/queen-client.ts";
import { WorkerActivity } from "./activity.ts";
import { LoadingProgressRelay, type DownloadProgressSource } from "./loading-progress.ts";
import { HealthMonitor } from "./monitor.ts";
import { WorkerPassthrough } from "./passthrough.ts";
import { createTargetResolver } from "./proxy-target.ts";
import { IdleReaper } from "./timeout.ts";
import { PortAllocator } from "./port-allocator.ts";
import type { WorkerRegistry } from "./registry.ts";
import { RestartPolicy } from "./restart.ts";
import { WorkerLifecycleManager } from "./worker-lifecycle.ts";
import { trackWorkerMemory } from "./worker-memory.ts";

export interface WorkersAreaDeps {
  loaded: LoadedConfig;
  registry: WorkerRegistry;
  bus: HiveBus;
  clock: Clock;
  logger: Logger;
  http: HttpClient;
  models: ModelResolver;
  /** Memory admission of spawns (the resources area). */
  admission: SpawnAdmission;
  spawner: Spawner;
  /** Base URL workers call back to (known once the socket is bound). */
  callbackBase: () => string;
  random?: () => number;
  workerEnv?: Record<string, string>;
  /** Echo of worker output lines (undefined = not echoed). */
  echo?: (line: string) => void;
  /** fetch for the pass-through and the progress relay (default: the global one). */
  fetch?: FetchLike;
  /** A model download's progress (the models area's tracker), relayed into the waiting worker. */
  downloads?: DownloadProgressSource;
}

export interface WorkersArea {
  lifecycle: WorkerLifecycleManager;
  monitor: HealthMonitor;
  activity: WorkerActivity;
  passthrough: WorkerPassthrough;
  idleReaper: IdleReaper;
}

export function createWorkersArea(d: WorkersAreaDeps): WorkersArea {
  const { config, secrets, resolved } = d.loaded;
  const ports = new PortAllocator({
    min: config.workers.port_min,
    max: config.workers.port_max,
    // Upstream workers bind 0.0.0.0, and a wildcard bind fails when any local address holds the
    // port. Probing the worker host itself would break when RBEE_WORKER_HOST names an address
    // (NAT, DNS) that is not bindable here. Besides the bind, every port any TCP socket uses
    // (TIME_WAIT included, /proc/net/tcp{,6}) is skipped: see port-allocator.ts.
    probeHosts: ["0.0.0.0"],
    now: () => d.clock.monotonic(),
  });
  const activity = new WorkerActivity({
    registry: d.registry,
    clock: d.clock,
    queueMax: config.workers.queue_max,
    queueTimeoutMs: config.workers.queue_timeout_s * 1000,
  });
  const progress = new LoadingProgressRelay({
    registry: d.registry,
    bus: d.bus,
    clock: d.clock,
    logger: d.logger,
    fetch: d.fetch,
    workerToken: secrets.apiToken,
    downloads: d.downloads,
  });
  const lifecycle = new WorkerLifecycleManager({
    config,
    logsDir: resolved.logsDir,
    registry: d.registry,
    bus: d.bus,
    logger: d.logger,
    spawner: d.spawner,
    clock: d.clock,
    http: d.http,
    ports,
    models: d.models,
    admission: d.admission,
    restartPolicy: new RestartPolicy(config.restart, d.random),
    activity,
    progress,
    workerToken: secrets.apiToken,
    queen: new QueenNotifier(d.http, d.logger, config.queen.callback_url, secrets.apiToken),
    callbackBase: d.callbackBase,
    workerEnv: d.workerEnv,
    echo: d.echo,
  });
  trackWorkerMemory({ admission: d.admission, registry: d.registry, bus: d.bus });
  const monitor = new HealthMonitor({ config: config.monitor, registry: d.registry, lifecycle, http: d.http, bus: d.bus, clock: d.clock, logger: d.logger });
  const passthrough = new WorkerPassthrough({
    resolve: createTargetResolver(d.registry, (name) => resolveProfile(config, name)),
    activity,
    workerToken: secrets.apiToken,
    bodyLimitBytes: config.workers.proxy_body_limit_mb * 1024 * 1024,
    fetch: d.fetch,
    onChunks: (workerId, chunks) => d.bus.publish("stream_chunks", { worker_id: workerId, chunks }),
  });
  const idleReaper = new IdleReaper({
    clock: d.clock,
    workers: () => d.registry.list(),
    changes: (listener) => d.registry.onChange(({ worker }) => listener(worker)),
    checkIntervalMs: config.idle.check_interval_s * 1000,
    timeoutS: config.idle.timeout_s,
    stopIdle: (id, idleMs, timeoutS) => lifecycle.stopIdle(id, idleMs, timeoutS),
  });
  return { lifecycle, monitor, activity, passthrough, idleReaper };
}
