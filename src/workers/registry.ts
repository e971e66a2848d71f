/**
 * In-memory worker registry (the hive's lifecycle view, not queen-rbee's routing view), and the
 * one place a worker record changes: every change goes through `commit`, which stores a new frozen
 * snapshot and tells the `onChange` listeners, so persistence (or anything else) hooks one place.
 * Readers get those frozen snapshots (read-only types, frozen objects): nothing outside can change a
 * worker behind its back, and listing costs no copying.
 */
import { notFound } from "../shared/errors.ts";
import { toSystemTime, type WorkerState } from "../shared/rbee-types.ts";
import type { Logger } from "../shared/logger.ts";
import type { WorkerExit, WorkerInfo, WorkerPhase } from "./schemas.ts";


type DeepReadonly<T> = T extends (infer E)[] ? readonly DeepReadonly<E>[] : T extends object ? { readonly [K in keyof T]: DeepReadonly<T[K]> } : T;

/** A worker record as readers see it: frozen, replaced (never changed) on each change. */
export type WorkerSnapshot = DeepReadonly<WorkerInfo>;

/** Fields `update` may patch; `state` only changes through `transition`, `id` never. */
export type WorkerPatch = Partial<Omit<WorkerInfo, "id" | "state">>;

/** Allowed state changes; anything else is a bug that is logged and not applied. */
const TRANSITIONS: Record<WorkerState, readonly WorkerState[]> = {
  loading: ["idle"],
  idle: ["busy", "loading"],
  busy: ["idle", "loading"],
};

/** Whether `from → to` is a state change the table allows (staying in a state always is). */
export const isValidTransition = (from: WorkerState, to: WorkerState): boolean => from === to || TRANSITIONS[from].includes(to);

export const MAX_EXIT_HISTORY = 10;

/** The 404 for a worker id this hive does not know (never spawned, or gone past retention). */
export const unknownWorker = (id: string) => notFound("WORKER_NOT_FOUND", `no worker ${id} is known to this hive`);

export type RegistryChange = { kind: "added" | "updated" | "removed"; worker: WorkerSnapshot };

export class WorkerRegistry {
  private readonly workers = new Map<string, WorkerSnapshot>();
  /** Final records of gone workers, readable for a while. */
  private readonly retired = new Map<string, { worker: WorkerSnapshot; expiresAt: number }>();
  private readonly listeners = new Set<(c: RegistryChange) => void>();

  constructor(
    private readonly logger: Logger,
    private readonly now: () => number,
    /** [workers] exited_retention_s, in ms. */
    private readonly retentionMs: number,
  ) {}

  onChange(listener: (c: RegistryChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Live workers only (a gone worker leaves the list at once). */
  list(): WorkerSnapshot[] {
    return [...this.workers.values()];
  }

  /** A live worker, or the final record of a recently gone one. */
  get(id: string): WorkerSnapshot | undefined {
    return this.workers.get(id) ?? this.retiredRecord(id);
  }

  live(id: string): WorkerSnapshot | undefined {
    return this.workers.get(id);
  }

  add(worker: WorkerInfo): WorkerSnapshot {
    this.retired.delete(worker.id);
    return this.commit("added", worker);
  }

  /** Patch non-state fields of a live worker. `state` changes must go through `transition`. */
  update(id: string, patch: WorkerPatch): WorkerSnapshot | undefined {
    const w = this.workers.get(id);
    return w && this.commit("updated", { ...w, ...patch });
  }

  /** Apply a state change if the table allows it; returns false (and logs) if not. */
  transition(id: string, to: WorkerState, patch: WorkerPatch = {}): boolean {
    const w = this.workers.get(id);
    if (!w) return false;
    if (!isValidTransition(w.state, to)) {
      this.logger.error("invalid worker state transition (bug)", { worker_id: id, from: w.state, to });
      return false;
    }
    this.commit("updated", { ...w, ...patch, state: to });
    return true;
  }

  /** Keep an exit on the worker (live, or just retired): newest in `last_exit`, recent ones in `exits`. */
  recordExit(id: string, exit: WorkerExit): void {
    const w = this.workers.get(id) ?? this.retired.get(id)?.worker;
    if (w) this.commit("updated", { ...w, last_exit: exit, exits: [...w.exits, exit].slice(-MAX_EXIT_HISTORY) });
  }

  /** Remove from the live list; the final record stays readable for the retention time. */
  retire(id: string): WorkerSnapshot | undefined {
    const w = this.workers.get(id);
    if (!w) return undefined;
    const final = this.commit("removed", { ...w, phase: "exited", pid: null });
    this.pruneRetired();
    return final;
  }

  /** Remove without keeping a final record (the spawn that added it failed before answering). */
  discard(id: string): void {
    const w = this.workers.get(id);
    if (!w) return;
    this.workers.delete(id);
    this.emit("removed", w);
  }

  /**
   * The one place a record changes: freeze the new version, put it where readers find it (live,
   * or retired for a removal or a change to a retired record), then tell the listeners.
   */
  private commit(kind: RegistryChange["kind"], next: WorkerSnapshot): WorkerSnapshot {
    const worker = deepFreeze(next);
    if (kind === "removed") {
      this.workers.delete(worker.id);
      this.retired.set(worker.id, { worker, expiresAt: this.now() + this.retentionMs });
    } else if (kind === "updated" && !this.workers.has(worker.id)) {
      this.retired.set(worker.id, { ...this.retired.get(worker.id)!, worker });
    } else {
      this.workers.set(worker.id, worker);
    }
    this.emit(kind, worker);
    return worker;
  }

  private emit(kind: RegistryChange["kind"], worker: WorkerSnapshot): void {
    for (const l of this.listeners) l({ kind, worker });
  }

  private retiredRecord(id: string): WorkerSnapshot | undefined {
    const r = this.retired.get(id);
    if (!r) return undefined;
    if (r.expiresAt <= this.now()) {
      this.retired.delete(id);
      return undefined;
    }
    return r.worker;
  }

  private pruneRetired(): void {
    const now = this.now();
    for (const [id, r] of this.retired) if (r.expiresAt <= now) this.retired.delete(id);
  }
}

/**
 * Freeze a record and the objects it holds (parts kept from older snapshots are frozen already).
 * Arrays stay read-only by type only: JavaScriptCore's JSON.stringify leaves its fast path for a
 * frozen array, which made GET /v1/workers/list with 1,000 workers 3.5× slower (bench in the report
 * of issue #9); nothing in the hive writes to a snapshot's arrays, the registry replaces them.
 */
function deepFreeze<T>(value: T): T {
  if (typeof value !== "object" || value === null || Object.isFrozen(value)) return value;
  for (const v of Object.values(value)) deepFreeze(v);
  return Array.isArray(value) ? value : Object.freeze(value);
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
  keep_alive_s?: number | null;
  memory_estimate_bytes?: number | null;
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
    in_flight: 0,
    keep_alive_s: init.keep_alive_s ?? null,
    load_progress: null,
    memory_estimate_bytes: init.memory_estimate_bytes ?? null,
    memory_used_bytes: null,
  };
}
