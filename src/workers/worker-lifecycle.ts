/**
 * WorkerLifecycleManager: spawn → ready → running → exit, and what happens after an exit.
 *
 *   spawn:  validate → profile/backend → binary → model (file:, or hf: via catalog/download)
 *           → preflight (room for the memory check) → port → Bun.spawn → registry `loading`
 *   ready:  callback profile: worker POSTs /v1/workers/ready, then we poll GET /health until healthy
 *           http profile: we poll the readiness path until it answers healthy
 *   exit:   the supervisor reports it at once; the exit is classified and kept with its stderr tail,
 *           then the restart policy decides: restart (same id, same port if free), crash_loop, or gone.
 */
import { randomUUID } from "node:crypto";
import { renameSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { resolveProfile, type HiveConfig, type WorkerProfile } from "../config.ts";
import type { HiveBus } from "../events.ts";
import type { ModelResolver } from "../models/model-resolver.ts";
import type { PortAllocator } from "./port-allocator.ts";
import type { QueenNotifier } from "../queen/queen-client.ts";
import { newWorkerRecord, type ExitReason, type WorkerInfo, type WorkerRegistry } from "./registry.ts";
import { newRestartHistory, type RestartHistory, type RestartPolicy } from "./restart.ts";
import { LoadDeadline } from "./timeout.ts";
import { exitRecord, PORT_CONFLICT_TAIL_LINES, spawnFailure, STDERR_TAIL_LINES } from "./exit-forensics.ts";
import { localUrl, pollUntilHealthy } from "./worker-health.ts";
import { resolveWorkerBinary } from "./worker-binary.ts";
import type { Clock, Timer } from "../shared/clock.ts";
import type { SupervisedChild, Spawner, ChildExit } from "../shared/daemon-lifecycle.ts";
import { errorMessage, HiveError, invalidInput, notFound } from "../shared/errors.ts";
import type { HttpClient } from "../shared/http-client.ts";
import { validateIdentifier, validateModelRef } from "../shared/input-validation.ts";
import type { Logger } from "../shared/logger.ts";
import { toSystemTime } from "../shared/rbee-types.ts";

export interface SpawnRequest {
  model_ref: string;
  backend: string;
  device: number;
  /** Upstream field, accepted and ignored (the hive resolves the path itself). */
  model_path?: string;
  /** Hive addition: which worker profile to use (default `[workers] default_profile`). */
  profile?: string;
  /** Hive addition: pin a Hugging Face revision. */
  revision?: string;
}

export interface SpawnResponse {
  worker_id: string;
  url: string;
  state: "loading";
}

export interface ReadyCallback {
  worker_id: string;
  url?: string;
  model_ref?: string;
  backend?: string;
  device?: number;
}

export interface Heartbeat {
  worker_id: string;
  timestamp?: string;
  health_status?: string;
}

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
  restartPolicy: RestartPolicy;
  queen?: QueenNotifier;
  /** Base URL workers call back to, e.g. http://127.0.0.1:9200 (known once the socket is bound). */
  callbackBase: () => string;
  /** Where to look for a worker binary "beside the hive executable". */
  execDir?: string;
  /** Extra environment for every worker (tests use it to steer the fake worker). */
  workerEnv?: Record<string, string>;
  /** Echo of worker output (unset = not echoed). */
  echo?: (line: string) => void;
}

/** Everything the manager knows about one worker beyond its public record. */
interface WorkerEntry {
  profileName: string;
  profile: WorkerProfile;
  binary: string;
  modelPath: string | null;
  child: SupervisedChild | null;
  /** Resolves once the exit of the current child has been fully handled. */
  exitHandled: Promise<void> | null;
  deadline: LoadDeadline | null;
  readiness: AbortController | null;
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
}

/**
 * A worker that could not bind its port is relaunched at once on another port, this many times in
 * a row; the next conflict goes to the restart policy like any failure, so it can never spin.
 */
export const MAX_PORT_CONFLICTS_IN_A_ROW = 3;

/** `{name}` placeholders substituted per argument (no shell ever sees them). */
export function substituteArgs(templates: string[], vars: Record<string, string>): string[] {
  return templates.map((a) => a.replace(/\{([a-z_]+)\}/g, (m, k: string) => (k in vars ? vars[k]! : m)));
}

export class WorkerLifecycleManager {
  private readonly entries = new Map<string, WorkerEntry>();
  private shuttingDown = false;

  constructor(private readonly d: LifecycleDeps) {}

  // ---------------------------------------------------------------- spawn

  async spawn(req: SpawnRequest): Promise<SpawnResponse> {
    if (this.shuttingDown) throw new HiveError(503, "SHUTTING_DOWN", "the hive is shutting down");
    const modelRef = this.d.models.validate(validateModelRef(req.model_ref)); // canonical spelling
    const backend = validateIdentifier(req.backend, "backend", 64);
    if (!Number.isInteger(req.device) || req.device < 0) throw invalidInput("device must be a non-negative integer", { field: "device" });
    const profileName = req.profile === undefined ? this.d.config.workers.default_profile : validateIdentifier(req.profile, "profile", 64);
    const profile = resolveProfile(this.d.config, profileName);
    if (!profile) {
      const known = ["llm-worker-rbee", ...Object.keys(this.d.config.workers.profiles)];
      throw new HiveError(400, "UNKNOWN_PROFILE", `no worker profile "${profileName}"; configured: ${[...new Set(known)].join(", ")}`);
    }
    if (!profile.backends.includes(backend)) {
      throw new HiveError(400, "UNSUPPORTED_BACKEND", `backend "${backend}" is not supported by profile "${profileName}"; supported: ${profile.backends.join(", ")}`);
    }
    const binary = resolveWorkerBinary({
      profileName,
      binary: profile.binary,
      configuredBinary: this.d.config.workers.binary,
      execDir: this.d.execDir ?? dirname(process.execPath),
    });
    const model = await this.d.models.resolve(modelRef, { revision: req.revision });
    this.preflight(req);

    const id = `worker-${randomUUID()}`;
    const port = this.d.ports.allocate(undefined, binary);
    const url = `http://${this.d.config.workers.host}:${port}`;
    const record = newWorkerRecord({
      id, url, model_ref: modelRef, backend, device: req.device, port, profile: profileName,
      phase: model.kind === "downloading" ? "downloading" : "spawning",
      now: this.d.clock.now(),
    });
    const entry: WorkerEntry = {
      profileName, profile, binary, modelPath: null, child: null, exitHandled: null, deadline: null, readiness: null,
      stopReason: null, stopMessage: null, restartTimer: null, history: newRestartHistory(), launchedAt: 0, stopRequested: false,
      portHeld: true, portConflicts: 0,
    };
    this.entries.set(id, entry);
    this.d.registry.add(record);

    if (model.kind === "local") {
      try {
        this.launch(id, entry, model.path);
      } catch (e) {
        this.entries.delete(id);
        this.releasePort(entry, port);
        this.d.registry.retire(id);
        this.d.registry.forget(id);
        throw e;
      }
    } else {
      this.d.registry.update(id, { download_id: model.downloadId });
      this.d.bus.publish("downloading", { worker_id: id, model_ref: modelRef, download_id: model.downloadId });
      model.done.then(
        (path) => {
          if (this.entries.get(id) !== entry || entry.stopRequested || this.shuttingDown) return;
          try {
            this.launch(id, entry, path);
          } catch (e) {
            this.failBeforeStart(id, entry, errorMessage(e));
          }
        },
        (e) => {
          if (this.entries.get(id) === entry) this.failBeforeStart(id, entry, `model download failed: ${errorMessage(e)}`);
        },
      );
    }
    return { worker_id: id, url, state: "loading" };
  }

  /**
   * Room for the "know the host" issue: memory/VRAM reservation happens here, before any process
   * starts, and answers 507 with the numbers. Nothing is checked yet.
   */
  private preflight(_req: SpawnRequest): void {}

  private launch(id: string, entry: WorkerEntry, modelPath: string): void {
    const w = this.d.registry.live(id);
    if (!w) return;
    const callbackUrl = `${this.d.callbackBase()}/v1/workers/ready`;
    const args = substituteArgs(entry.profile.args, {
      worker_id: id,
      model_path: modelPath,
      model_ref: w.model_ref,
      backend: w.backend,
      device: String(w.device),
      port: String(w.port),
      callback_url: callbackUrl,
    });
    entry.modelPath = modelPath;
    const logFile = join(this.d.logsDir, `${id}.log`);
    rotateIfLarger(logFile, this.d.config.workers.log_file_max_mb * 1024 * 1024);
    const child = this.d.spawner({
      id,
      command: [entry.binary, ...args],
      env: { ...this.d.workerEnv, ...entry.profile.env },
      logFile,
      ringLines: this.d.config.workers.log_ring_lines,
      echo: this.d.echo,
      onOutput: () => entry.deadline?.touch(),
    });
    entry.child = child;
    entry.launchedAt = this.d.clock.monotonic();
    entry.stopReason = null;
    entry.stopMessage = null;
    entry.exitHandled = child.exited.then((exit) => this.handleExit(id, entry, child, exit));
    this.d.registry.update(id, { pid: child.pid, phase: "starting", model_path: modelPath, next_restart_at: null });
    this.d.bus.publish("spawned", { worker_id: id, pid: child.pid, port: w.port, model_ref: w.model_ref, restart_count: w.restart_count });
    this.d.logger.info("worker spawned", { worker_id: id, pid: child.pid, port: w.port, model_ref: w.model_ref, profile: entry.profileName });

    const cfg = this.d.config.workers;
    entry.deadline = new LoadDeadline(this.d.clock, cfg.loading_stall_timeout_s * 1000, cfg.loading_max_s * 1000, (kind, waited) => {
      const why =
        kind === "stalled"
          ? `no output for ${cfg.loading_stall_timeout_s} s while loading (stall timeout)`
          : `not ready after ${Math.round(waited / 100) / 10} s (loading_max_s = ${cfg.loading_max_s})`;
      this.d.logger.warn("worker load timeout", { worker_id: id, why });
      this.d.bus.publish("load_timeout", { worker_id: id, kind, message: why });
      void this.stopChild(entry, "load_timeout", why);
    });
    if (entry.profile.readiness === "http") void this.confirmReady(id, entry, entry.profile.readiness_path);
  }

  private failBeforeStart(id: string, entry: WorkerEntry, message: string): void {
    const w = this.d.registry.live(id);
    if (!w) return;
    this.d.registry.recordExit(id, spawnFailure(message, this.d.clock.now()));
    this.d.bus.publish("spawn_failed", { worker_id: id, message });
    this.d.logger.warn("worker could not start", { worker_id: id, err: message });
    this.releasePort(entry, w.port);
    this.entries.delete(id);
    this.d.registry.retire(id);
  }

  /** `ran`: a process of ours ran on the port, so its sockets may linger there (see PortAllocator). */
  private releasePort(entry: WorkerEntry, port: number, ran = false): void {
    if (!entry.portHeld) return;
    entry.portHeld = false;
    this.d.ports.release(port, ran ? entry.binary : undefined);
  }

  // ---------------------------------------------------------------- readiness

  /** Decides the unauthenticated callback rule (protocol §3) for the auth plugin. */
  callbackAccess(path: string, body: unknown): "allow" | "unknown" | "deny" {
    const id = (body as { worker_id?: unknown } | null)?.worker_id;
    if (typeof id !== "string") return "deny";
    const w = this.d.registry.live(id);
    if (!w || !this.entries.has(id)) return "unknown";
    if (path === "/v1/workers/ready") return w.state === "loading" && this.entries.get(id)!.child ? "allow" : "deny";
    return "allow"; // heartbeats from a worker we spawned
  }

  readyCallback(body: ReadyCallback): { message: string } {
    const id = body.worker_id;
    const w = this.d.registry.live(id);
    const entry = this.entries.get(id);
    if (!w || !entry) throw notFound("WORKER_NOT_FOUND", `no worker ${id} was spawned by this hive`);
    if (w.state === "loading" && entry.child && w.phase !== "confirming") {
      // The worker calls back before its HTTP server listens (upstream order): confirm by /health.
      this.d.registry.update(id, { phase: "confirming" });
      this.d.bus.publish("callback", { worker_id: id });
      void this.confirmReady(id, entry, entry.profile.health_path);
    }
    return { message: "Worker registered as ready" };
  }

  private async confirmReady(id: string, entry: WorkerEntry, path: string): Promise<void> {
    entry.readiness?.abort();
    const ac = new AbortController();
    entry.readiness = ac;
    const w = this.d.registry.live(id);
    if (!w) return;
    const intervalMs = this.d.config.workers.ready_poll_interval_s * 1000;
    if (await pollUntilHealthy(this.d.http, `${localUrl(w.port)}${path}`, entry.profile.healthy_status, intervalMs, ac.signal)) {
      this.markReady(id, entry);
    }
  }

  private markReady(id: string, entry: WorkerEntry): void {
    entry.portConflicts = 0;
    entry.deadline?.cancel();
    entry.deadline = null;
    entry.readiness = null;
    const now = this.d.clock.now();
    const loadMs = Math.round(this.d.clock.monotonic() - entry.launchedAt);
    const ok = this.d.registry.transition(id, "idle", {
      phase: "running",
      ready_at: toSystemTime(now),
      slots_available: 1,
      failed_health_checks: 0,
      crash_loop_reason: null,
    });
    if (!ok) return;
    this.d.restartPolicy.markHealthy(entry.history, this.d.clock.monotonic());
    const w = this.d.registry.live(id)!;
    this.d.bus.publish("ready", { worker_id: id, url: w.url, load_ms: loadMs, restart_count: w.restart_count });
    this.d.logger.info("worker ready", { worker_id: id, url: w.url, load_ms: loadMs });
    void this.d.queen?.workerReady(w);
  }

  heartbeat(body: Heartbeat): { message: string } {
    const w = this.d.registry.live(body.worker_id);
    if (!w) throw notFound("WORKER_NOT_FOUND", `no worker ${body.worker_id} is known to this hive`);
    this.d.registry.update(w.id, { last_heartbeat: toSystemTime(this.d.clock.now()), health_status: body.health_status ?? null });
    return { message: "Heartbeat received" };
  }

  // ---------------------------------------------------------------- exits and restarts

  private async handleExit(id: string, entry: WorkerEntry, child: SupervisedChild, exit: ChildExit): Promise<void> {
    if (entry.child !== child) return;
    entry.child = null;
    entry.deadline?.cancel();
    entry.deadline = null;
    entry.readiness?.abort();
    entry.readiness = null;
    const w = this.d.registry.live(id);
    if (!w) return;
    this.releasePort(entry, w.port, true);
    const ctx = { ...entry, state: w.state, port: w.port };
    // Only a loading worker can have failed to bind; re-probe the port now that its group is gone.
    const loadingExit = w.state === "loading" && !exit.requested;
    const record = exitRecord(
      loadingExit ? { ...ctx, outputTail: child.tail(PORT_CONFLICT_TAIL_LINES, "all"), portHeldByOther: this.d.ports.hasListener(w.port) } : ctx,
      exit,
      child.tail(STDERR_TAIL_LINES, "stderr"),
    );
    const { reason, message } = record;
    this.d.registry.recordExit(id, record);
    this.d.registry.update(id, { pid: null, slots_available: 0 });
    this.d.bus.publish("exited", { worker_id: id, reason, code: exit.code, signal: exit.signal, message });
    const level = reason === "stopped" ? "info" : "warn";
    this.d.logger[level]("worker exited", { worker_id: id, reason, code: exit.code, signal: exit.signal });

    if (reason === "stopped" || entry.stopRequested || this.shuttingDown) {
      this.finish(id, "stopped");
      return;
    }
    if (reason === "port_conflict") {
      // Whatever the probes said, this port does not work for this worker: skip it for a while.
      this.d.ports.quarantine(w.port);
      entry.portConflicts++;
      if (entry.portConflicts <= MAX_PORT_CONFLICTS_IN_A_ROW) {
        this.relaunchOnAnotherPort(id, entry);
        return;
      }
    }
    const decision = this.d.restartPolicy.decide(entry.history, reason, this.d.clock.monotonic());
    if (decision.action === "restart") {
      this.scheduleRestart(id, entry, decision.delayMs, decision.attempt, reason);
    } else if (decision.action === "crash_loop") {
      this.enterCrashLoop(id, decision.why);
    } else {
      this.finish(id, "gone");
    }
  }

  /** Leave the live list; the final record stays readable for a while. */
  private finish(id: string, how: "stopped" | "gone"): void {
    const entry = this.entries.get(id);
    const live = this.d.registry.live(id);
    if (entry && live) this.releasePort(entry, live.port);
    this.entries.delete(id);
    const w = this.d.registry.retire(id);
    if (how === "stopped" && w) this.d.bus.publish("stopped", { worker_id: id });
  }

  private toLoading(id: string, patch: Partial<WorkerInfo>): void {
    const w = this.d.registry.live(id);
    if (!w) return;
    if (w.state === "loading") this.d.registry.update(id, patch);
    else this.d.registry.transition(id, "loading", patch);
  }

  private scheduleRestart(id: string, entry: WorkerEntry, delayMs: number, attempt: number, reason: ExitReason): void {
    const at = this.d.clock.now() + delayMs;
    this.toLoading(id, { phase: "restarting", next_restart_at: toSystemTime(at), slots_available: 0 });
    this.d.bus.publish("restarting", { worker_id: id, attempt, delay_ms: delayMs, reason });
    this.d.logger.info("worker restart scheduled", { worker_id: id, attempt, delay_ms: delayMs, reason });
    entry.restartTimer = this.d.clock.setTimeout(() => {
      entry.restartTimer = null;
      this.relaunch(id, entry);
    }, delayMs);
  }

  /**
   * The worker never got its port: not a failure of the worker, so no backoff, no restart policy,
   * no restart_count. The old port is quarantined, so the allocator hands out another one.
   */
  private relaunchOnAnotherPort(id: string, entry: WorkerEntry): void {
    this.toLoading(id, { phase: "restarting", next_restart_at: null, slots_available: 0 });
    this.d.bus.publish("restarting", { worker_id: id, attempt: 0, delay_ms: 0, reason: "port_conflict" });
    this.d.logger.warn("worker could not bind its port; relaunching on another port", { worker_id: id, conflicts: entry.portConflicts });
    this.relaunch(id, entry, { countAsRestart: false });
  }

  private relaunch(id: string, entry: WorkerEntry, { countAsRestart = true } = {}): void {
    if (this.entries.get(id) !== entry || entry.stopRequested || this.shuttingDown) return;
    const w = this.d.registry.live(id);
    if (!w || !entry.modelPath) return;
    try {
      const port = this.d.ports.allocate(w.port, entry.binary);
      entry.portHeld = true;
      const now = this.d.clock.now();
      this.d.registry.update(id, {
        port,
        url: `http://${this.d.config.workers.host}:${port}`,
        ...(countAsRestart ? { restart_count: w.restart_count + 1, last_restart: toSystemTime(now) } : {}),
        started_at: toSystemTime(now),
        ready_at: null,
        failed_health_checks: 0,
      });
      this.launch(id, entry, entry.modelPath);
    } catch (e) {
      const message = errorMessage(e);
      const live = this.d.registry.live(id);
      if (live) this.releasePort(entry, live.port);
      this.d.registry.recordExit(id, spawnFailure(message, this.d.clock.now()));
      const decision = this.d.restartPolicy.decide(entry.history, "spawn_failed", this.d.clock.monotonic());
      if (decision.action === "restart") this.scheduleRestart(id, entry, decision.delayMs, decision.attempt, "spawn_failed");
      else this.enterCrashLoop(id, decision.action === "crash_loop" ? decision.why : message);
    }
  }

  private enterCrashLoop(id: string, why: string): void {
    this.toLoading(id, { phase: "crash_loop", next_restart_at: null, crash_loop_reason: why, slots_available: 0, pid: null });
    this.d.bus.publish("crash_loop", { worker_id: id, reason: why });
    this.d.logger.error("worker in crash loop; not restarting until asked", { worker_id: id, why });
  }

  /** Monitor verdict: stop the worker (group, grace, kill) and let the restart policy decide. */
  markUnhealthy(id: string, why: string): void {
    const entry = this.entries.get(id);
    if (!entry?.child || entry.stopReason) return;
    this.d.bus.publish("unhealthy", { worker_id: id, reason: why });
    this.d.logger.warn("worker unhealthy; replacing it", { worker_id: id, why });
    void this.stopChild(entry, "unhealthy", `unhealthy: ${why}`);
  }

  private async stopChild(entry: WorkerEntry, reason: ExitReason, message: string | null): Promise<void> {
    const child = entry.child;
    if (!child) return;
    entry.stopReason = reason;
    entry.stopMessage = message;
    entry.readiness?.abort();
    await child.stop(this.d.config.workers.stop_grace_s * 1000);
    await entry.exitHandled;
  }

  // ---------------------------------------------------------------- operator actions

  /** Graceful stop; resolves when the process is gone. Never restarted afterwards. */
  async stop(id: string, graceMs = this.d.config.workers.stop_grace_s * 1000): Promise<WorkerInfo> {
    const entry = this.entries.get(id);
    const w = this.d.registry.get(id);
    if (!w) throw notFound("WORKER_NOT_FOUND", `no worker ${id} is known to this hive`);
    if (!entry) return w; // already gone: stopping twice is not an error
    entry.stopRequested = true;
    if (entry.restartTimer) this.d.clock.clearTimeout(entry.restartTimer);
    entry.restartTimer = null;
    if (entry.child) {
      this.d.registry.update(id, { phase: "stopping" });
      entry.stopReason = "stopped";
      entry.stopMessage = null;
      entry.readiness?.abort();
      await entry.child.stop(graceMs);
      await entry.exitHandled;
    } else {
      this.finish(id, "stopped"); // crash_loop, waiting to restart, or still downloading
    }
    return this.d.registry.get(id) ?? w;
  }

  /** `POST /v1/workers/{id}/restart`: retry a crash-looping worker now, or restart a running one. */
  async restart(id: string): Promise<WorkerInfo> {
    const entry = this.entries.get(id);
    const w = this.d.registry.live(id);
    if (!w || !entry) throw notFound("WORKER_NOT_FOUND", `no live worker ${id}; spawn a new one`);
    if (!entry.modelPath) throw new HiveError(409, "WORKER_NOT_STARTED", `worker ${id} has not started yet (phase ${w.phase})`);
    if (entry.restartTimer) this.d.clock.clearTimeout(entry.restartTimer);
    entry.restartTimer = null;
    entry.history = newRestartHistory(); // an operator's retry starts from a clean slate
    entry.portConflicts = 0;
    if (entry.child) {
      entry.stopReason = "stopped";
      entry.stopMessage = "restarted on request";
      const child = entry.child;
      entry.readiness?.abort();
      // Detach first so the exit handler does not retire it, then stop and relaunch.
      entry.child = null;
      entry.deadline?.cancel();
      await child.stop(this.d.config.workers.stop_grace_s * 1000);
      this.releasePort(entry, w.port, true);
      this.d.registry.recordExit(id, exitRecord({ ...entry, state: w.state }, child.exit!, child.tail(STDERR_TAIL_LINES, "stderr")));
    }
    this.toLoading(id, { phase: "restarting", crash_loop_reason: null, next_restart_at: null, pid: null });
    this.d.bus.publish("restarting", { worker_id: id, attempt: 0, delay_ms: 0, reason: "requested" });
    this.relaunch(id, entry);
    return this.d.registry.live(id) ?? w;
  }

  logs(id: string, tail: number): string[] {
    const entry = this.entries.get(id);
    if (!this.d.registry.get(id)) throw notFound("WORKER_NOT_FOUND", `no worker ${id} is known to this hive`);
    return entry?.child?.tail(tail, "all") ?? this.d.registry.get(id)!.last_exit?.stderr_tail.slice(-tail) ?? [];
  }

  /** Where and how the monitor checks a running worker; undefined when it has no process. */
  healthTarget(id: string): { url: string; healthyStatus: string[] } | undefined {
    const entry = this.entries.get(id);
    const w = this.d.registry.live(id);
    if (!entry?.child || !w || entry.stopReason) return undefined;
    return { url: `${localUrl(w.port)}${entry.profile.health_path}`, healthyStatus: entry.profile.healthy_status };
  }

  /**
   * Shutdown has begun: refuse spawns and restarts from now on, before the listener closes, so a
   * worker that dies during the first teardown steps is not brought back. Pending restarts are dropped.
   */
  beginShutdown(): void {
    this.shuttingDown = true;
    for (const entry of this.entries.values()) {
      if (entry.restartTimer) this.d.clock.clearTimeout(entry.restartTimer);
      entry.restartTimer = null;
    }
  }

  /** Shutdown: no more spawns or restarts; every worker stopped in parallel. */
  async stopAll(graceMs: number): Promise<void> {
    this.beginShutdown();
    await Promise.all([...this.entries.keys()].map((id) => this.stop(id, graceMs).catch(() => {})));
  }

  /** Last resort (second signal, shutdown bound exceeded): SIGKILL every worker group now. */
  killAll(): void {
    this.shuttingDown = true;
    for (const e of this.entries.values()) e.child?.signal("SIGKILL");
  }
}

/** Restarts append to the same log: keep one previous generation once it grows past the cap. */
function rotateIfLarger(path: string, maxBytes: number): void {
  try {
    if (statSync(path).size > maxBytes) renameSync(path, `${path}.1`);
  } catch {
    // no log yet
  }
}
