/**
 * The hive's events: one TypeBox schema per event type, the single source of their payload types.
 * Services publish them on the bus; the events stream, metrics and the audit log subscribe with types.
 */
import { t, type Static } from "./shared/schema.ts";
import { EventBus, type BusEvent } from "./shared/event-bus.ts";
import { ExitReason, LoadProgress } from "./workers/schemas.ts";

const Worker = { worker_id: t.String() };
const Download = { download_id: t.String(), model_ref: t.String(), revision: t.String() };

export const HiveEventSchemas = {
  spawned: t.Object({ ...Worker, pid: t.Integer(), port: t.Integer(), model_ref: t.String(), restart_count: t.Integer() }),
  downloading: t.Object({ ...Worker, model_ref: t.String(), download_id: t.String() }),
  callback: t.Object(Worker),
  ready: t.Object({ ...Worker, url: t.String(), load_ms: t.Integer(), restart_count: t.Integer() }),
  exited: t.Object({ ...Worker, reason: ExitReason, code: t.Union([t.Integer(), t.Null()]), signal: t.Union([t.String(), t.Null()]), message: t.String() }),
  stopped: t.Object(Worker),
  spawn_failed: t.Object({ ...Worker, message: t.String() }),
  load_timeout: t.Object({ ...Worker, kind: t.Union([t.Literal("stalled"), t.Literal("hard_cap")]), message: t.String() }),
  health_failed: t.Object({ ...Worker, failures: t.Integer(), error: t.String() }),
  health_recovered: t.Object(Worker),
  unhealthy: t.Object({ ...Worker, reason: t.String() }),
  restarting: t.Object({
    ...Worker,
    attempt: t.Integer(),
    delay_ms: t.Integer(),
    reason: t.Union([ExitReason, t.Literal("requested")], { description: "the exit that caused it, or requested (operator)" }),
  }),
  crash_loop: t.Object({ ...Worker, reason: t.String() }),
  adopted: t.Object(
    { ...Worker, pid: t.Integer(), port: t.Integer(), url: t.String(), state: t.String(), phase: t.String(), restart_count: t.Integer() },
    { description: "a worker process a previous hive left running is this hive's again (same id, url, port, counters)" },
  ),
  restored: t.Object(
    { ...Worker, phase: t.String(), download_id: t.Union([t.String(), t.Null()]) },
    { description: "a saved worker without a process (waiting for its download or a restart, or in crash_loop) continues" },
  ),
  idle_stopped: t.Object({ ...Worker, idle_s: t.Number(), timeout_s: t.Number() }),
  loading_progress: t.Composite([t.Object(Worker), t.Omit(LoadProgress, ["at"])]),
  download_started: t.Object(Download),
  download_complete: t.Object({ ...Download, local_path: t.String(), bytes: t.Integer() }),
  download_failed: t.Object({ ...Download, code: t.String(), message: t.String() }),

  // ---- Transient (TRANSIENT_EVENTS): for the metrics and the audit log only; never streamed or buffered.
  auth_success: t.Object({ method: t.String(), path: t.String(), token: t.String({ description: "fingerprint token:<6 hex>" }), correlation_id: t.String() }),
  auth_failure: t.Object({
    method: t.String(),
    path: t.String(),
    token: t.Union([t.String(), t.Null()], { description: "fingerprint of the token sent, null when none" }),
    reason: t.String(),
    correlation_id: t.String(),
  }),
  config_loaded: t.Object({ source: t.Union([t.String(), t.Null()]), hive_id: t.String(), version: t.String(), addr: t.String(), audit_mode: t.String() }),
  shutdown: t.Object({ reason: t.String(), ms: t.Integer(), graceful: t.Integer(), forced: t.Integer(), kept: t.Integer(), workers_total: t.Integer() }),
  model_deleted: t.Object({ model_ref: t.String(), freed_bytes: t.Integer() }),
  health_checked: t.Object({ ...Worker, ok: t.Boolean(), seconds: t.Number() }),
  download_retried: t.Object({ file: t.String(), stalled: t.Boolean() }),
  spawn_refused: t.Object({ code: t.String(), backend: t.String(), device: t.Integer() }),
  http_request: t.Object({ method: t.String(), route: t.String({ description: 'the route template, or "unmatched"' }), status: t.Integer(), seconds: t.Number() }),
  stream_chunks: t.Object({ ...Worker, chunks: t.Integer() }),
  queen_heartbeat: t.Object({ ok: t.Boolean(), seconds: t.Number(), late_seconds: t.Number(), status: t.Union([t.Integer(), t.Null()]) }),
  audit_dropped: t.Object({ event: t.String() }),
};

/** Types delivered to their own listeners only: no id, not buffered, not on GET /v1/events. */
export const TRANSIENT_EVENTS: ReadonlySet<string> = new Set([
  "auth_success",
  "auth_failure",
  "config_loaded",
  "shutdown",
  "model_deleted",
  "health_checked",
  "download_retried",
  "spawn_refused",
  "http_request",
  "stream_chunks",
  "queen_heartbeat",
  "audit_dropped",
] satisfies Array<keyof typeof HiveEventSchemas>);

export type HiveEvents = { [K in keyof typeof HiveEventSchemas]: Static<(typeof HiveEventSchemas)[K]> };
export type HiveEventType = keyof HiveEvents;
export type HiveEvent = BusEvent<HiveEvents>;
export type HiveBus = EventBus<HiveEvents>;

export const createHiveBus = (capacity: number, now: () => number): HiveBus => new EventBus<HiveEvents>(capacity, now, TRANSIENT_EVENTS);
