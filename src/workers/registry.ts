/**
 * In-memory worker registry (the hive's lifecycle view, not queen-rbee's routing view).
 * Every change goes through `update`/`transition`, so persistence and events can hook one place.
 */
import { t } from "../shared/schema.ts";
import { SystemTime, WorkerState, toSystemTime } from "../shared/rbee-types.ts";
import type { Logger } from "../shared/logger.ts";

/** Why a loading worker is not ready yet, or what the hive is doing with it. */
export const WorkerPhase = t.Union([
  t.Literal("spawning"),
  t.Literal("downloading"),
  t.Literal("starting"),
  t.Literal("confirming"),
  t.Literal("restarting"),
  t.Literal("running"),
  t.Literal("crash_loop"),
  t.Literal("stopping"),
  t.Literal("exited"),
]);
export type WorkerPhase = typeof WorkerPhase.static;

/** How a worker process ended. */
export const ExitReason = t.Union([
  t.Literal("stopped"),
  t.Literal("exited"),
  t.Literal("crashed"),
  t.Literal("killed"),
  t.Literal("load_failed"),
  t.Literal("unhealthy"),
  t.Literal("load_timeout"),
  t.Literal("spawn_failed"),
  t.Literal("port_conflict"),
]);
export type ExitReason = typeof ExitReason.static;

export const WorkerExit = t.Object({
  reason: ExitReason,
  code: t.Union([t.Integer(), t.Null()]),
  signal: t.Union([t.String(), t.Null()]),
  message: t.String({ description: "one sentence: what happened" }),
  stderr_tail: t.Array(t.String(), { description: "last lines of the worker's stderr" }),
  at: SystemTime,
});
export type WorkerExit = typeof WorkerExit.static;

const Nullable = <T extends Parameters<typeof t.Union>[0][number]>(s: T) => t.Union([s, t.Null()]);

export const WorkerInfo = t.Object({
  // Upstream fields (protocol §1), same names and types.
  id: t.String(),
  url: t.String(),
  model_ref: t.String(),
  backend: t.String(),
  device: t.Integer({ minimum: 0 }),
  state: WorkerState,
  last_activity: SystemTime,
  slots_total: t.Integer(),
  slots_available: t.Integer(),
  failed_health_checks: t.Integer(),
  pid: Nullable(t.Integer()),
  restart_count: t.Integer(),
  last_restart: Nullable(SystemTime),
  last_heartbeat: Nullable(SystemTime),
  // Hive-only additions.
  phase: WorkerPhase,
  port: t.Integer(),
  profile: t.String(),
  model_path: Nullable(t.String()),
  download_id: Nullable(t.String()),
  started_at: SystemTime,
  ready_at: Nullable(SystemTime),
  health_status: Nullable(t.String({ description: "last health_status from a heartbeat" })),
  last_exit: Nullable(WorkerExit),
  exits: t.Array(WorkerExit, { description: "recent exits, newest last" }),
  next_restart_at: Nullable(SystemTime),
  crash_loop_reason: Nullable(t.String()),
});
export type WorkerInfo = typeof WorkerInfo.static;

/** Allowed state changes; anything else is a bug that is logged and not applied. */
const ALLOWED: Record<WorkerState, WorkerState[]> = {
  loading: ["idle"],
  idle: ["busy", "loading"],
  busy: ["idle", "loading"],
};

export const MAX_EXIT_HISTORY = 10;

export type RegistryChange = { kind: "added" | "updated" | "removed"; worker: WorkerInfo };

export class WorkerRegistry {
  private readonly workers = new Map<string, WorkerInfo>();
  /** Final records of gone workers, readable for a while. */
  private readonly retired = new Map<string, { worker: WorkerInfo; expiresAt: number }>();
  private readonly listeners = new Set<(c: RegistryChange) => void>();

  constructor(
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
    private readonly retentionMs = 600_000,
  ) {}

  onChange(listener: (c: RegistryChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(kind: RegistryChange["kind"], worker: WorkerInfo) {
    for (const l of this.listeners) l({ kind, worker });
  }

  add(worker: WorkerInfo): void {
    this.retired.delete(worker.id);
    this.workers.set(worker.id, worker);
    this.emit("added", worker);
  }

  /** Live workers only (a gone worker leaves the list at once). */
  list(): WorkerInfo[] {
    return [...this.workers.values()];
  }

  /** A live worker, or the final record of a recently gone one. */
  get(id: string): WorkerInfo | undefined {
    const live = this.workers.get(id);
    if (live) return live;
    const r = this.retired.get(id);
    if (!r) return undefined;
    if (r.expiresAt <= this.now()) {
      this.retired.delete(id);
      return undefined;
    }
    return r.worker;
  }

  live(id: string): WorkerInfo | undefined {
    return this.workers.get(id);
  }

  has(id: string): boolean {
    return this.workers.has(id);
  }

  get size(): number {
    return this.workers.size;
  }

  /** Patch non-state fields. `state` changes must go through `transition`. */
  update(id: string, patch: Partial<Omit<WorkerInfo, "id" | "state">>): WorkerInfo | undefined {
    const w = this.workers.get(id);
    if (!w) return undefined;
    Object.assign(w, patch);
    this.emit("updated", w);
    return w;
  }

  /** Apply a state change if it is valid; returns false (and logs) if not. */
  transition(id: string, to: WorkerState, patch: Partial<Omit<WorkerInfo, "id" | "state">> = {}): boolean {
    const w = this.workers.get(id);
    if (!w) return false;
    if (w.state !== to && !ALLOWED[w.state].includes(to)) {
      this.logger.error("invalid worker state transition (bug)", { worker_id: id, from: w.state, to });
      return false;
    }
    Object.assign(w, patch, { state: to });
    this.emit("updated", w);
    return true;
  }

  recordExit(id: string, exit: WorkerExit): void {
    const w = this.workers.get(id) ?? this.retired.get(id)?.worker;
    if (!w) return;
    w.last_exit = exit;
    w.exits = [...w.exits, exit].slice(-MAX_EXIT_HISTORY);
  }

  /** Remove from the live list; the final record stays readable for the retention time. */
  retire(id: string): WorkerInfo | undefined {
    const w = this.workers.get(id);
    if (!w) return undefined;
    this.workers.delete(id);
    w.phase = "exited";
    w.pid = null;
    this.retired.set(id, { worker: w, expiresAt: this.now() + this.retentionMs });
    this.pruneRetired();
    this.emit("removed", w);
    return w;
  }

  /** Bring a retired record back to life (restart keeps the worker id). */
  revive(id: string): WorkerInfo | undefined {
    const r = this.retired.get(id);
    if (!r) return undefined;
    this.retired.delete(id);
    this.workers.set(id, r.worker);
    this.emit("added", r.worker);
    return r.worker;
  }

  /** Drop the retired record too (operator stopped a crash-looping worker). */
  forget(id: string): void {
    this.retired.delete(id);
  }

  private pruneRetired() {
    const now = this.now();
    for (const [id, r] of this.retired) if (r.expiresAt <= now) this.retired.delete(id);
  }
}

export function newWorkerRecord(init: {
  id: string;
  url: string;
  model_ref: string;
  backend: string;
  device: number;
  port: number;
  profile: string;
  phase: WorkerPhase;
  now: number;
}): WorkerInfo {
  const ts = toSystemTime(init.now);
  return {
    id: init.id,
    url: init.url,
    model_ref: init.model_ref,
    backend: init.backend,
    device: init.device,
    state: "loading",
    last_activity: ts,
    slots_total: 1,
    slots_available: 0,
    failed_health_checks: 0,
    pid: null,
    restart_count: 0,
    last_restart: null,
    last_heartbeat: null,
    phase: init.phase,
    port: init.port,
    profile: init.profile,
    model_path: null,
    download_id: null,
    started_at: ts,
    ready_at: null,
    health_status: null,
    last_exit: null,
    exits: [],
    next_restart_at: null,
    crash_loop_reason: null,
  };
}
