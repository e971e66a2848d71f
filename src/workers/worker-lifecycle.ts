/**
 * WorkerLifecycleManager: spawn → ready → running → exit, and the operator's actions.
 *
 *   spawn:  validate → profile/backend → binary → worker id → where the model is and its footprint
 *           (no download) → memory admission (SpawnAdmission) → model (catalog, file:, or the hf:
 *           download it starts or joins) → port → launch → registry `loading`
 *   launch: worker-launcher.ts (argv, log, supervised process, load deadline)
 *   ready:  readiness.ts (callback then /health, or polling for http profiles)
 *   exit:   exit-handler.ts (forensics, then restart / port-conflict relaunch / crash_loop / gone)
 *   operator: stop, restart, logs (here)
 */
import { randomUUID } from "node:crypto";
import { resolveProfile, type WorkerProfile } from "../config.ts";
import { errorMessage, HiveError, invalidInput, notFound } from "../shared/errors.ts";
import { validateIdentifier } from "../shared/input-validation.ts";
import type { ResolvedModel } from "../shared/model-source.ts";
import type { OutboundContext } from "../shared/correlation.ts";
import { withDeadline } from "../shared/deadline-propagation.ts";
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
import type { Heartbeat, ReadyCallback, SpawnRequest, SpawnResponse, WorkerExit, WorkerInfo } from "./schemas.ts";
import { advertisedUrl, localUrl } from "./worker-health.ts";
import { binaryFor } from "./worker-binary.ts";
import { WorkerLauncher } from "./worker-launcher.ts";
import { ShutdownTally, WorkerSurvival, type AdoptedProcess } from "./survival.ts";

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
  /** Adoption, restore and the keep-workers exit (survival.ts). */
  private readonly survival: WorkerSurvival;
  /** How the workers ended at shutdown (the summary line). */
  readonly shutdownTally = new ShutdownTally();

  constructor(private readonly d: LifecycleDeps) {
    this.readiness = new WorkerReadiness(d, this.table);
    this.exits = new ExitHandler(d, this.table, (id, entry, path) => this.launcher.launch(id, entry, path));
    this.launcher = new WorkerLauncher(d, {
      onExit: (id, entry, child, exit) => this.exits.handleExit(id, entry, child, exit),
      onStarted: (id, entry) => this.readiness.watchStarted(id, entry),
    });
    this.survival = new WorkerSurvival(d, this.table, {
      launcher: this.launcher,
      exits: this.exits,
      readiness: this.readiness,
      failBeforeStart: (id, entry, message) => this.failBeforeStart(id, entry, message),
    });
  }

  private get graceMs(): number {
    return this.d.config.workers.stop_grace_s * 1000;
  }

  // ---------------------------------------------------------------- spawn

  /**
   * Answers at once with state `loading`; the process starts now, or when its model has downloaded.
   * The worker's memory is admitted first (its id made for it), before any download begins.
   * `ctx` (the request's X-Deadline) bounds the hub reads that find the model's footprint: past
   * it the spawn answers 504 DEADLINE_EXCEEDED with nothing admitted or started.
   */
  async spawn(req: SpawnRequest, ctx?: OutboundContext): Promise<SpawnResponse> {
    if (this.table.shuttingDown) throw new HiveError(503, "SHUTTING_DOWN", "the hive is shutting down");
    const ref = this.d.models.validate(req.model_ref); // parsed once, here
    const modelRef = ref.modelRef; // canonical spelling
    const plan = this.plan(req);
    const id = `worker-${randomUUID()}`;
    // X-Deadline is a wall-clock instant of the caller's: compared with the real clock, not the injected one.
    const located = await withDeadline(this.d.models.locate(ref, { revision: req.revision }), ctx, Date.now());
    const need = await this.d.admission.estimate(located.footprint, req.context);
    const force = req.force === true;
    await this.d.admission.admit({ workerId: id, backend: plan.backend, device: req.device, need, force });

    const entry = newWorkerEntry(plan.profileName, plan.profile, plan.binary);
    entry.memory = { need, force };
    let port: number | null = null;
    try {
      if (this.table.shuttingDown) throw new HiveError(503, "SHUTTING_DOWN", "the hive is shutting down");
      const model: ResolvedModel = located.local !== null ? { kind: "local", path: located.local } : await this.d.models.resolve(ref, { revision: req.revision });
      port = this.d.ports.allocate(undefined, plan.binary);
      const url = advertisedUrl(this.d.config.workers.host, port);
      const record = newWorkerRecord({
        id, url, model_ref: modelRef, backend: plan.backend, device: req.device, port, profile: plan.profileName,
        phase: model.kind === "downloading" ? "downloading" : "spawning",
        now: this.d.clock.now(),
        memory_estimate_bytes: need.total_bytes,
        keep_alive_s: req.keep_alive_s ?? null,
      });
      this.table.entries.set(id, entry);
      this.d.registry.add(record);
      if (model.kind === "local") this.launcher.launch(id, entry, model.path);
      else this.launchAfterDownload(id, entry, modelRef, model);
      return { worker_id: id, url, state: "loading" };
    } catch (e) {
      // The caller gets the error; no record of a worker that never was, no memory held for it.
      this.d.admission.release(id);
      if (this.table.entries.get(id) === entry) {
        this.table.entries.delete(id);
        this.d.registry.discard(id);
      }
      if (port !== null) releasePort(this.d.ports, entry, port);
      throw e;
    }
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
    const binary = binaryFor(cfg, profileName, profile);
    return { backend, profileName, profile, binary };
  }

  private launchAfterDownload(id: string, entry: WorkerEntry, modelRef: string, model: ResolvedModel & { kind: "downloading" }): void {
    this.d.registry.update(id, { download_id: model.downloadId });
    this.d.bus.publish("downloading", { worker_id: id, model_ref: modelRef, download_id: model.downloadId });
    const unfollow = this.d.progress.followDownload(id, model.downloadId);
    model.done.then(
      (path) => {
        unfollow();
        if (!this.table.mayContinue(id, entry)) return;
        try {
          this.launcher.launch(id, entry, path);
        } catch (e) {
          this.failBeforeStart(id, entry, errorMessage(e));
        }
      },
      (e) => {
        unfollow();
        if (this.table.entries.get(id) === entry) this.failBeforeStart(id, entry, `model download failed: ${errorMessage(e)}`);
      },
    );
  }

  /** Callers have checked that `entry` is still this worker's (mayContinue); finish releases it. */
  private failBeforeStart(id: string, entry: WorkerEntry, message: string): void {
    if (!this.d.registry.live(id) || this.table.entries.get(id) !== entry) return;
    this.d.registry.recordExit(id, spawnFailure(message, this.d.clock.now()));
    this.d.bus.publish("spawn_failed", { worker_id: id, message });
    this.d.logger.warn("worker could not start", { worker_id: id, err: message });
    this.exits.finish(id, "gone");
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

  /**
   * Idle timeout verdict: a ready worker with nothing in flight is stopped for good (group, grace,
   * kill; never restarted) to free its memory; it leaves the list once its process is gone.
   */
  stopIdle(id: string, idleMs: number, timeoutS: number): void {
    const entry = this.table.entries.get(id);
    const w = this.d.registry.live(id);
    if (!entry?.child || !w || entry.stopReason || entry.stopRequested || this.table.shuttingDown) return;
    // Checked again in the same turn that stops it: a request that started meanwhile keeps it.
    if (w.state !== "idle" || w.phase !== "running" || this.d.activity.inFlight(id) > 0) return;
    entry.stopRequested = true;
    cancelRestartTimer(this.d.clock, entry);
    const idleS = Math.round(idleMs / 100) / 10;
    this.d.registry.update(id, { phase: "stopping" });
    this.d.bus.publish("idle_stopped", { worker_id: id, idle_s: idleS, timeout_s: timeoutS });
    this.d.logger.info("worker idle; stopping it", { worker_id: id, idle_s: idleS, timeout_s: timeoutS });
    void stopChild(entry, "idle", `idle for ${idleS} s (idle timeout ${timeoutS} s); stopped to free its memory`, this.graceMs);
  }

  /**
   * Wait (up to [workers] drain_timeout_s) for the requests in flight on a worker that is being
   * stopped or restarted; it takes no new ones meanwhile (its phase says so, its queue is refused).
   */
  private async drain(id: string): Promise<void> {
    const inFlight = this.d.activity.inFlight(id);
    const drained = await this.d.activity.drain(id, this.d.config.workers.drain_timeout_s * 1000);
    if (!drained) {
      this.d.logger.warn("drain timeout: stopping the worker with requests in flight", {
        worker_id: id,
        in_flight: this.d.activity.inFlight(id),
        drain_timeout_s: this.d.config.workers.drain_timeout_s,
      });
    } else if (inFlight > 0) {
      this.d.logger.info("worker drained", { worker_id: id, requests: inFlight });
    }
  }

  // ---------------------------------------------------------------- operator actions

  /**
   * Graceful stop; resolves when the process is gone. Never restarted afterwards. Requests in
   * flight are waited for first (`drain`, default true; bounded by [workers] drain_timeout_s).
   */
  async stop(id: string, graceMs = this.graceMs, opts: { drain?: boolean } = {}): Promise<WorkerSnapshot> {
    const entry = this.table.entries.get(id);
    const w = this.d.registry.get(id);
    if (!w) throw unknownWorker(id);
    if (!entry) return w; // already gone: stopping twice is not an error
    entry.stopRequested = true;
    cancelRestartTimer(this.d.clock, entry);
    if (entry.child) {
      this.d.registry.update(id, { phase: "stopping" });
      if (opts.drain !== false) await this.drain(id);
      await stopChild(entry, "stopped", null, graceMs);
    } else {
      this.exits.finish(id, "stopped"); // crash_loop, waiting to restart, or still downloading
    }
    return this.d.registry.get(id) ?? w;
  }

  /**
   * `POST /v1/workers/{id}/restart`: retry a crash-looping worker now, or restart a running one
   * (after its requests in flight, unless `drain` is false).
   */
  async restart(id: string, opts: { drain?: boolean } = {}): Promise<WorkerSnapshot> {
    const entry = this.table.entries.get(id);
    const w = this.d.registry.live(id);
    if (!w || !entry) throw notFound("WORKER_NOT_FOUND", `no live worker ${id}; spawn a new one`);
    if (!entry.modelPath) throw new HiveError(409, "WORKER_NOT_STARTED", `worker ${id} has not started yet (phase ${w.phase})`);
    if (entry.memory && !this.d.admission.holds(id)) {
      // A crash loop gave its memory back: it must fit again (same id, same estimate).
      await this.d.admission.admit({ workerId: id, backend: w.backend, device: w.device, need: entry.memory.need, force: entry.memory.force });
      if (!this.table.mayContinue(id, entry)) {
        this.d.admission.release(id);
        throw notFound("WORKER_NOT_FOUND", `worker ${id} was stopped meanwhile`);
      }
    }
    if (opts.drain !== false && entry.child && w.state !== "loading") {
      this.d.registry.update(id, { phase: "restarting" }); // takes no new requests meanwhile
      await this.drain(id);
      if (this.table.entries.get(id) !== entry) return this.d.registry.get(id) ?? w; // stopped meanwhile
    }
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
      this.d.activity.ended(id);
      await child.stop(this.graceMs);
      releasePort(this.d.ports, entry, w.port, true);
      this.d.registry.recordExit(id, exitRecord({ ...entry, state: w.state }, child.exit!, child.tail(STDERR_TAIL_LINES, "stderr")));
    }
    this.d.registry.transition(id, "loading", { phase: "restarting", crash_loop_reason: null, next_restart_at: null, pid: null });
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
    this.shutdownTally.stopping(this.table.entries.values());
    await Promise.all([...this.table.entries.keys()].map((id) => this.stop(id, graceMs, { drain: false }).catch(() => {})));
  }

  /** Last resort (second signal, shutdown bound exceeded): SIGKILL every worker group now. */
  killAll(): void {
    this.table.shuttingDown = true;
    this.shutdownTally.forcing(this.table.entries.values());
    for (const e of this.table.entries.values()) e.child?.signal("SIGKILL");
  }

  // ---------------------------------------------------------------- surviving a restart (adoption.ts)

  /** Take over a worker process a previous hive left running (same id, url, port, state, counters). */
  adopt(record: WorkerInfo, proc: AdoptedProcess): void {
    this.survival.adopt(record, proc);
  }

  /** A saved worker without a process continues: after its model (download) or parked in crash_loop. */
  restore(record: WorkerInfo, model: Promise<string> | "parked"): void {
    this.survival.restore(record, model);
  }

  /** A saved worker whose process is gone: its final record only. */
  reportGone(record: WorkerInfo, exit: WorkerExit): void {
    this.survival.reportGone(record, exit);
  }

  /** keep_workers_on_exit: leave every worker running and saved for the next hive; no more spawns. */
  detachAll(): void {
    const kept = this.survival.detachAll();
    this.shutdownTally.total += kept;
    this.shutdownTally.kept += kept;
  }
}
