/**
 * The workers area, built from the config: port allocator, restart policy, lifecycle manager
 * (spawn, readiness, exits, restarts) and the health monitor. The registry is passed in: the
 * models area reads it too (a model in use cannot be deleted).
 */
import type { LoadedConfig } from "../config.ts";
import type { HiveBus } from "../events.ts";
import type { Clock } from "../shared/clock.ts";
import type { Spawner } from "../shared/daemon-lifecycle.ts";
import type { HttpClient } from "../shared/http-client.ts";
import type { Logger } from "../shared/logger.ts";
import type { ModelResolver } from "../shared/model-source.ts";
import { QueenNotifier } from "../queen/queen-client.ts";
import { HealthMonitor } from "./monitor.ts";
import { PortAllocator } from "./port-allocator.ts";
import type { WorkerRegistry } from "./registry.ts";
import { RestartPolicy } from "./restart.ts";
import { WorkerLifecycleManager } from "./worker-lifecycle.ts";

export interface WorkersAreaDeps {
  loaded: LoadedConfig;
  registry: WorkerRegistry;
  bus: HiveBus;
  clock: Clock;
  logger: Logger;
  http: HttpClient;
  models: ModelResolver;
  spawner: Spawner;
  /** Base URL workers call back to (known once the socket is bound). */
  callbackBase: () => string;
  random?: () => number;
  workerEnv?: Record<string, string>;
  /** Echo of worker output lines (undefined = not echoed). */
  echo?: (line: string) => void;
}

export interface WorkersArea {
  lifecycle: WorkerLifecycleManager;
  monitor: HealthMonitor;
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
    restartPolicy: new RestartPolicy(config.restart, d.random),
    queen: new QueenNotifier(d.http, d.logger, config.queen.callback_url, secrets.apiToken),
    callbackBase: d.callbackBase,
    workerEnv: d.workerEnv,
    echo: d.echo,
  });
  const monitor = new HealthMonitor({ config: config.monitor, registry: d.registry, lifecycle, http: d.http, bus: d.bus, clock: d.clock, logger: d.logger });
  return { lifecycle, monitor };
}
