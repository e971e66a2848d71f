/**
 * What the parts of the worker lifecycle share (the manager, the launcher, readiness, the exit
 * handler): their dependencies, and the private per-worker state (process, timers, restart memory)
 * kept beside the public record in the registry.
 */
import type { HiveConfig, WorkerProfile } from "../config.ts";
import type { HiveBus } from "../events.ts";
import type { QueenNotifier } from "../queen/queen-client.ts";
import type { Clock, Timer } from "../shared/clock.ts";
import type { Spawner, SupervisedChild } from "../shared/daemon-lifecycle.ts";
import type { HttpClient } from "../shared/http-client.ts";
import type { Logger } from "../shared/logger.ts";
import type { ModelResolver } from "../shared/model-source.ts";
import type { MemoryNeed, SpawnAdmission } from "../shared/spawn-admission.ts";
import type { WorkerActivity } from "./activity.ts";
import type { LoadingProgressRelay } from "./loading-progress.ts";
import type { PortAllocator } from "./port-allocator.ts";
import type { WorkerRegistry } from "./registry.ts";
import { newRestartHistory, type RestartHistory, type RestartPolicy } from "./restart.ts";
import type { ExitReason } from "./schemas.ts";
import type { LoadDeadline } from "./timeout.ts";

export interface LifecycleDeps {
  config: HiveConfig;
  logsDir: string;
  registry: WorkerRegistry;
  bus: HiveBus;
  logger: Logger;
  spawner: Spawner;
  clock: Clock;
  http: HttpClient;
  ports: PortAllocator;
  models: ModelResolver;
  /** Memory admission before any process starts or any download begins (the resources area). */
  admission: SpawnAdmission;
  restartPolicy: RestartPolicy;
  /** Requests in flight and slots per worker (forwarded requests, reports, drains). */
  activity: WorkerActivity;
  /** What can be seen of a loading worker's progress, relayed into its record and the events. */
  progress: LoadingProgressRelay;
  /** LLORCH_API_TOKEN: the hive's Bearer on the workers' own protected routes (they inherit it). */
  workerToken?: string;
  queen?: QueenNotifier;
  /** Base URL workers call back to, e.g. http://127.0.0.1:9200 (known once the socket is bound). */
  callbackBase: () => string;
  /** Extra environment for every worker (tests use it to steer the fake worker). */
  workerEnv?: Record<string, string>;
  /** Echo of worker output (unset = not echoed). */
  echo?: (line: string) => void;
}

/** Everything the lifecycle knows about one worker beyond its public record. */
export interface WorkerEntry {
  profileName: string;
  profile: WorkerProfile;
  binary: string;
  modelPath: string | null;
  child: SupervisedChild | null;
  /** Resolves once the exit of the current child has been fully handled. */
  exitHandled: Promise<void> | null;
  deadline: LoadDeadline | null;
  readiness: AbortController | null;
  /** Ends the relay of its loading progress (ready, exit). */
  progress: AbortController | null;
  /** Reason to record when a stop we asked for completes (unhealthy, load_timeout, stopped). */
  stopReason: ExitReason | null;
  stopMessage: string | null;
  restartTimer: Timer | null;
  history: RestartHistory;
  launchedAt: number;
  /** Set when the operator stopped it: never restart, never launch after a download. */
  stopRequested: boolean;
  /** The port in the record is reserved in the allocator (released exactly once). */
  portHeld: boolean;
  /** Port conflicts since the worker was last ready; bounds the relaunches that skip the policy. */
  portConflicts: number;
  /** What it was admitted with: an operator's retry of a crash loop (which released it) re-admits it. */
  memory: { need: MemoryNeed; force: boolean } | null;
}

export const newWorkerEntry = (profileName: string, profile: WorkerProfile, binary: string): WorkerEntry => ({
  profileName,
  profile,
  binary,
  modelPath: null,
  child: null,
  exitHandled: null,
  deadline: null,
  readiness: null,
  progress: null,
  stopReason: null,
  stopMessage: null,
  restartTimer: null,
  history: newRestartHistory(),
  launchedAt: 0,
  stopRequested: false,
  portHeld: true,
  portConflicts: 0,
  memory: null,
});

/** The entries of the workers this hive runs, and whether shutdown has begun. */
export class WorkerTable {
  readonly entries = new Map<string, WorkerEntry>();
  /** Set once shutdown begins: no spawn, launch or restart from then on. */
  shuttingDown = false;

  /** Still this worker's entry, not stopped by the operator, and the hive is not shutting down. */
  mayContinue(id: string, entry: WorkerEntry): boolean {
    return this.entries.get(id) === entry && !entry.stopRequested && !this.shuttingDown;
  }
}

export function cancelRestartTimer(clock: Clock, entry: WorkerEntry): void {
  if (entry.restartTimer) clock.clearTimeout(entry.restartTimer);
  entry.restartTimer = null;
}

/** Loading is over (ready, exited or detached): its deadline and readiness poll end. */
export function endLoading(entry: WorkerEntry): void {
  entry.deadline?.cancel();
  entry.deadline = null;
  entry.readiness?.abort();
  entry.readiness = null;
  entry.progress?.abort();
  entry.progress = null;
}

/** `ran`: a process of ours ran on the port, so its sockets may linger there (see PortAllocator). */
export function releasePort(ports: PortAllocator, entry: WorkerEntry, port: number, ran = false): void {
  if (!entry.portHeld) return;
  entry.portHeld = false;
  ports.release(port, ran ? entry.binary : undefined);
}

/** Stop the worker's process (group, grace, kill) for `reason`; resolves once its exit is handled. */
export async function stopChild(entry: WorkerEntry, reason: ExitReason, message: string | null, graceMs: number): Promise<void> {
  const child = entry.child;
  if (!child) return;
  entry.stopReason = reason;
  entry.stopMessage = message;
  entry.readiness?.abort();
  await child.stop(graceMs);
  await entry.exitHandled;
}
