/**
 * When a loading worker counts as ready, and what workers tell the hive on their own.
 *   callback profile: the worker POSTs /v1/workers/ready, then we poll GET /health until healthy
 *                     (upstream workers call back before their HTTP server listens);
 *   http profile:     we poll the readiness path from the start.
 * Heartbeats only stamp the record; the monitor judges their age.
 */
import { notFound } from "../shared/errors.ts";
import { toSystemTime } from "../shared/rbee-types.ts";
import { endLoading, type LifecycleDeps, type WorkerEntry, type WorkerTable } from "./lifecycle-context.ts";
import { readyProgress } from "./loading-progress.ts";
import { unknownWorker } from "./registry.ts";
import type { Heartbeat, ReadyCallback } from "./schemas.ts";
import { slotsOf } from "./slots.ts";
import { localUrl, pollUntilHealthy } from "./worker-health.ts";

export type CallbackAccess = "allow" | "unknown" | "deny";

export class WorkerReadiness {
  constructor(
    private readonly d: LifecycleDeps,
    private readonly table: WorkerTable,
  ) {}

  /** Decides the unauthenticated callback rule (protocol §3) for the auth plugin. */
  callbackAccess(path: string, body: unknown): CallbackAccess {
    const id = (body as { worker_id?: unknown } | null)?.worker_id;
    if (typeof id !== "string") return "deny";
    const w = this.d.registry.live(id);
    const entry = this.table.entries.get(id);
    if (!w || !entry) return "unknown";
    if (path === "/v1/workers/ready") return w.state === "loading" && entry.child ? "allow" : "deny";
    return "allow"; // heartbeats from a worker we spawned
  }

  readyCallback(body: ReadyCallback): { message: string } {
    const id = body.worker_id;
    const w = this.d.registry.live(id);
    const entry = this.table.entries.get(id);
    if (!w || !entry) throw notFound("WORKER_NOT_FOUND", `no worker ${id} was spawned by this hive`);
    if (w.state === "loading" && entry.child && w.phase !== "confirming") {
      this.d.registry.update(id, { phase: "confirming" });
      this.d.bus.publish("callback", { worker_id: id });
      void this.confirmReady(id, entry, entry.profile.health_path);
    }
    return { message: "Worker registered as ready" };
  }

  heartbeat(body: Heartbeat): { message: string } {
    const w = this.d.registry.live(body.worker_id);
    if (!w) throw unknownWorker(body.worker_id);
    this.d.registry.update(w.id, { last_heartbeat: toSystemTime(this.d.clock.now()), health_status: body.health_status ?? null });
    return { message: "Heartbeat received" };
  }

  /** A worker process just started: an http profile is watched from now on (no callback comes). */
  watchStarted(id: string, entry: WorkerEntry): void {
    if (entry.profile.readiness === "http") void this.confirmReady(id, entry, entry.profile.readiness_path);
  }

  /**
   * A loading worker adopted from a previous hive: its callback may have gone to that hive, so
   * its health is polled from now on (a callback arriving here is still accepted).
   */
  watchAdopted(id: string, entry: WorkerEntry): void {
    const http = entry.profile.readiness === "http";
    if (!http) this.d.registry.update(id, { phase: "confirming" });
    void this.confirmReady(id, entry, http ? entry.profile.readiness_path : entry.profile.health_path);
  }

  private async confirmReady(id: string, entry: WorkerEntry, path: string): Promise<void> {
    entry.readiness?.abort();
    const ac = new AbortController();
    entry.readiness = ac;
    const w = this.d.registry.live(id);
    if (!w) return;
    const intervalMs = this.d.config.workers.ready_poll_interval_s * 1000;
    if (await pollUntilHealthy(this.d.http, `${localUrl(w.port)}${path}`, entry.profile.healthy_status, intervalMs, ac.signal)) {
      // Its slots are known before it is announced ready (llama-server says them once loaded).
      const slots =
        entry.profile.slots === "props"
          ? await slotsOf(entry.profile, w, { http: this.d.http, logger: this.d.logger, token: this.d.workerToken, signal: ac.signal })
          : entry.profile.slots;
      if (!ac.signal.aborted) this.markReady(id, entry, slots);
    }
  }

  private markReady(id: string, entry: WorkerEntry, slots: number): void {
    entry.portConflicts = 0;
    endLoading(entry);
    const loadMs = Math.round(this.d.clock.monotonic() - entry.launchedAt);
    this.d.activity.started(id, slots);
    const ok = this.d.registry.transition(id, "idle", {
      phase: "running",
      ready_at: toSystemTime(this.d.clock.now()),
      slots_total: slots,
      slots_available: slots,
      in_flight: 0,
      load_progress: readyProgress(this.d.clock.now()),
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
}
