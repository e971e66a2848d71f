/**
 * WorkerLifecycleManager: spawn → ready → running → exit, and the operator's actions.
 *
 *   spawn:  validate → profile/backend → binary → model (file:, or hf: via catalog/download)
 *           → preflight (room for the memory check) → port → launch → registry `loading`
 *   launch: worker-launcher.ts (argv, log, supervised process, load deadline)
 *   ready:  readiness.ts (callback then /health, or polling for http profiles)
 *   exit:   exit-handler.ts (forensics, then restart / port-conflict relaunch / crash_loop / gone)
 *   operator: stop, restart, logs (here)
 */
import { randomUUID } from "node:crypto";
import { dirname } from "node:path";
import { resolveProfile, type WorkerProfile } from "../config.ts";
import { errorMessage, HiveError, invalidInput, notFound } from "../shared/errors.ts";
import { validateIdentifier } from "../shared/input-validation.ts";
import type { ResolvedModel } from "../shared/model-source.ts";
import { ExitHandler } from "./exit-handler.ts";
import { exitRecord, spawnFailure, STDERR_TAIL_LINES } from "./exit-forensics.ts";
import {
  cancelRestartTimer,
  endLoading,
  newWorkerEntry,
  releasePort,
  stopChild,
  WorkerTable,
  type LifecycleDeps,
  type WorkerEntry,
} from "./lifecycle-context.ts";
import { WorkerReadiness, type CallbackAccess } from "./readiness.ts";
import { newWorkerRecord, unknownWorker, type WorkerSnapshot } from "./registry.ts";
import { newRestartHistory } from "./restart.ts";
import type { Heartbeat, ReadyCallback, SpawnRequest, SpawnResponse } from "./schemas.ts";
import { advertisedUrl, localUrl } from "./worker-health.ts";
import { resolveWorkerBinary } from "./worker-binary.ts";
import { WorkerLauncher } from "./worker-launcher.ts";

export type { LifecycleDeps } from "./lifecycle-context.ts";

/** How a spawn request runs: its profile and the binary found for it. */
interface SpawnPlan {
  backend: string;
  profileName: string;
  profile: WorkerProfile;
  binary: string;
}

export class WorkerLifecycleManager {
  private readonly table = new WorkerTable();
  private readonly readiness: WorkerReadiness;
  private readonly launcher: WorkerLauncher;
  private readonly exits: ExitHandler;

  constructor(private readonly d: LifecycleDeps) {
    this.readiness = new WorkerReadiness(d, this.table);
    this.exits = new ExitHandler(d, this.table, (id, entry, path) => this.launcher.launch(id, entry, path));
    this.launcher = new WorkerLauncher(d, {
      onExit: (id, entry, child, exit) => this.exits.handleExit(id, entry, child, exit),
      onStarted: (id, entry) => this.readiness.watchStarted(id, entry),
    });
  }

  private get graceMs(): number {
    return this.d.config.workers.stop_grace_s * 1000;
  }

  // ---------------------------------------------------------------- spawn

  /** Answers at once with state `loading`; the process starts now, or when its model has downloaded. */
  async spawn(req: SpawnRequest): Promise<SpawnResponse> {
    if (this.table.shuttingDown) throw new HiveError(503, "SHUTTING_DOWN", "the hive is shutting down");
    const ref = this.d.models.validate(req.model_ref); // parsed once, here
    const modelRef = ref.modelRef; // canonical spelling
    const plan = this.plan(req);
    const model = await this.d.models.resolve(ref, { revision: req.revision });
    this.preflight(req);

    const id = `worker-${randomUUID()}`;
    const port = this.d.ports.allocate(undefined, plan.binary);
    const url = advertisedUrl(this.d.config.workers.host, port);
    const record = newWorkerRecord({
      id, url, model_ref: modelRef, backend: plan.backend, device: req.device, port, profile: plan.profileName,
      phase: model.kind === "downloading" ? "downloading" : "spawning",
      now: this.d.clock.now(),
    });
    const entry = newWorkerEntry(plan.profileName, plan.profile, plan.binary);
    this.table.entries.set(id, entry);
    this.d.registry.add(record);

    if (model.kind === "local") {
      try {
        this.launcher.launch(id, entry, model.path);
      } catch (e) {
        // The caller gets the error; no record of a worker that never was.
        this.table.entries.delete(id);
        releasePort(this.d.ports, entry, port);
        this.d.registry.discard(id);
        throw e;
      }
    } else {
      this.launchAfterDownload(id, entry, modelRef, model);
    }
    return { worker_id: id, url, state: "loading" };
  }

  /** The cheap checks, before any hub traffic: backend, device, profile, and the binary it runs. */
  private plan(req: SpawnRequest): SpawnPlan {
    const cfg = this.d.config;
    const backend = validateIdentifier(req.backend, "backend", 64);
    if (!Number.isInteger(req.device) || req.device < 0) throw invalidInput("device must be a non-negative integer", { field: "device" });
    const profileName = req.profile === undefined ? cfg.workers.default_profile : validateIdentifier(req.profile, "profile", 64);
    const profile = resolveProfile(cfg, profileName);
    if (!profile) {
      const known = ["llm-worker-rbee", ...Object.keys(cfg.workers.profiles)];
      throw new HiveError(400, "UNKNOWN_PROFILE", `no worker profile "${profileName}"; configured: ${[...new Set(known)].join(", ")}`);
    }
    if (!profile.backends.includes(backend)) {
      throw new HiveError(400, "UNSUPPORTED_BACKEND", `backend "${backend}" is not supported by profile "${profileName}"; supported: ${profile.backends.join(", ")}`);
    }
    const binary = resolveWorkerBinary({
      profileName,
      binary: profile.binary,
      configuredBinary: cfg.workers.binary,
      execDir: this.d.execDir ?? dirname(process.execPath),
    });
    return { backend, profileName, profile, binary };
  }

  /**
   * Room for the "know the host" issue: memory/VRAM reservation happens here, before any process
   * starts, and answers 507 with the numbers. Nothing is checked yet.
   */
  private preflight(_req: SpawnRequest): void {}

  private launchAfterDownload(id: string, entry: WorkerEntry, modelRef: string, model: ResolvedModel & { kind: "downloading" }): void {
    this.d.registry.update(id, { download_id: model.downloadId });
    this.d.bus.publish("downloading", { worker_id: id, model_ref: modelRef, download_id: model.downloadId });
    model.done.then(
      (path) => {
        if (!this.table.mayContinue(id, entry)) return;
        try {
          this.launcher.launch(id, entry, path);
        } catch (e) {
          this.failBeforeStart(id, entry, errorMessage(e));
        }
      },
      (e) => {
        if (this.table.entries.get(id) === entry) this.failBeforeStart(id, entry, `model download failed: ${errorMessage(e)}`);
      },
    );
  }

  private failBeforeStart(id: string, entry: WorkerEntry, message: string): void {
    const w = this.d.registry.live(id);
    if (!w) return;
    this.d.registry.recordExit(id, spawnFailure(message, this.d.clock.now()));
    this.d.bus.publish("spawn_failed", { worker_id: id, message });
    this.d.logger.warn("worker could not start", { worker_id: id, err: message });
    releasePort(this.d.ports, entry, w.port);
    this.table.entries.delete(id);
    this.d.registry.retire(id);
  }

  // ---------------------------------------------------------------- what workers and the monitor report

  callbackAccess(path: string, body: unknown): CallbackAccess {
    return this.readiness.callbackAccess(path, body);
  }

  readyCallback(body: ReadyCallback): { message: string } {
    return this.readiness.readyCallback(body);
  }

  heartbeat(body: Heartbeat): { message: string } {
    return this.readiness.heartbeat(body);
  }

  /** Where and how the monitor checks a running worker; undefined when it has no process. */
  healthTarget(id: string): { url: string; healthyStatus: string[] } | undefined {
    const entry = this.table.entries.get(id);
    const w = this.d.registry.live(id);
    if (!entry?.child || !w || entry.stopReason) return undefined;
    return { url: `${localUrl(w.port)}${entry.profile.health_path}`, healthyStatus: entry.profile.healthy_status };
  }

  /** Monitor verdict: stop the worker (group, grace, kill) and let the restart policy decide. */
  markUnhealthy(id: string, why: string): void {
    const entry = this.table.entries.get(id);
    if (!entry?.child || entry.stopReason) return;
    this.d.bus.publish("unhealthy", { worker_id: id, reason: why });
    this.d.logger.warn("worker unhealthy; replacing it", { worker_id: id, why });
    void stopChild(entry, "unhealthy", `unhealthy: ${why}`, this.graceMs);
  }

  // ---------------------------------------------------------------- operator actions

  /** Graceful stop; resolves when the process is gone. Never restarted afterwards. */
  async stop(id: string, graceMs = this.graceMs): Promise<WorkerSnapshot> {
    const entry = this.table.entries.get(id);
    const w = this.d.registry.get(id);
    if (!w) throw unknownWorker(id);
    if (!entry) return w; // already gone: stopping twice is not an error
    entry.stopRequested = true;
    cancelRestartTimer(this.d.clock, entry);
    if (entry.child) {
      this.d.registry.update(id, { phase: "stopping" });
      await stopChild(entry, "stopped", null, graceMs);
    } else {
      this.exits.finish(id, "stopped"); // crash_loop, waiting to restart, or still downloading
    }
    return this.d.registry.get(id) ?? w;
  }

  /** `POST /v1/workers/{id}/restart`: retry a crash-looping worker now, or restart a running one. */
  async restart(id: string): Promise<WorkerSnapshot> {
    const entry = this.table.entries.get(id);
    const w = this.d.registry.live(id);
    if (!w || !entry) throw notFound("WORKER_NOT_FOUND", `no live worker ${id}; spawn a new one`);
    if (!entry.modelPath) throw new HiveError(409, "WORKER_NOT_STARTED", `worker ${id} has not started yet (phase ${w.phase})`);
    cancelRestartTimer(this.d.clock, entry);
    entry.history = newRestartHistory(); // an operator's retry starts from a clean slate
    entry.portConflicts = 0;
    const child = entry.child;
    if (child) {
      entry.stopReason = "stopped";
      entry.stopMessage = "restarted on request";
      // Detach first so the exit handler does not retire it, then stop and relaunch.
      entry.child = null;
      endLoading(entry);
      await child.stop(this.graceMs);
      releasePort(this.d.ports, entry, w.port, true);
      this.d.registry.recordExit(id, exitRecord({ ...entry, state: w.state }, child.exit!, child.tail(STDERR_TAIL_LINES, "stderr")));
    }
    this.exits.toLoading(id, { phase: "restarting", crash_loop_reason: null, next_restart_at: null, pid: null });
    this.d.bus.publish("restarting", { worker_id: id, attempt: 0, delay_ms: 0, reason: "requested" });
    this.exits.relaunch(id, entry);
    return this.d.registry.live(id) ?? w;
  }

  logs(id: string, tail: number): string[] {
    const w = this.d.registry.get(id);
    if (!w) throw unknownWorker(id);
    return this.table.entries.get(id)?.child?.tail(tail, "all") ?? w.last_exit?.stderr_tail.slice(-tail) ?? [];
  }

  // ---------------------------------------------------------------- shutdown

  /**
   * Shutdown has begun: refuse spawns and restarts from now on, before the listener closes, so a
   * worker that dies during the first teardown steps is not brought back. Pending restarts are dropped.
   */
  beginShutdown(): void {
    this.table.shuttingDown = true;
    for (const entry of this.table.entries.values()) cancelRestartTimer(this.d.clock, entry);
  }

  /** Shutdown: no more spawns or restarts; every worker stopped in parallel. */
  async stopAll(graceMs: number): Promise<void> {
    this.beginShutdown();
    await Promise.all([...this.table.entries.keys()].map((id) => this.stop(id, graceMs).catch(() => {})));
  }

  /** Last resort (second signal, shutdown bound exceeded): SIGKILL every worker group now. */
  killAll(): void {
    this.table.shuttingDown = true;
    for (const e of this.table.entries.values()) e.child?.signal("SIGKILL");
  }
}
