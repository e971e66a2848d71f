/**
 * The workers area's records, requests and answers as TypeBox schemas, one definition each: the
 * controller validates and documents them (named OpenAPI components), the services take and
 * return their `static` types.
 */
import { Nullable, t, type TSchema } from "../shared/schema.ts";
import { Field } from "../shared/fields.ts";
import { SystemTime, WorkerState } from "../shared/rbee-types.ts";


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
  t.Literal("idle"),
]);
export type ExitReason = typeof ExitReason.static;

export const WorkerExit = t.Object({
  reason: ExitReason,
  code: Nullable(t.Integer()),
  signal: Nullable(t.String()),
  message: t.String({ description: "one sentence: what happened" }),
  stderr_tail: t.Array(t.String(), { description: "last lines of the worker's output (stdout and stderr share its log file)" }),
  at: SystemTime,
});
export type WorkerExit = typeof WorkerExit.static;

/**
 * How far a loading worker has come, from its model download through its load to ready: one bar
 * for a caller. `fraction` is within the stage (null where nothing says how far).
 */
export const LoadProgress = t.Object({
  stage: t.Union([t.Literal("downloading"), t.Literal("loading"), t.Literal("ready")]),
  source: t.Union([t.Literal("download"), t.Literal("worker"), t.Literal("output"), t.Literal("hive")], {
    description: "download: the hive's model download; worker: its /v1/loading/progress stream; output: its output (sign of life); hive: the hive's own step",
  }),
  worker_stage: Nullable(t.String({ description: "the worker's own stage name, e.g. loading_to_vram" })),
  done: Nullable(t.Number()),
  total: Nullable(t.Number()),
  unit: Nullable(t.Union([t.Literal("bytes"), t.Literal("layers")])),
  fraction: Nullable(t.Number({ minimum: 0, maximum: 1 })),
  detail: Nullable(t.String({ description: "the file being downloaded, or the worker's last output line" })),
  at: SystemTime,
});
export type LoadProgress = typeof LoadProgress.static;

/** Per-spawn override of [idle] timeout_s, bounded to a week; 0 = never idle-stopped. */
export const MAX_KEEP_ALIVE_S = 7 * 24 * 3600;

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
  memory_estimate_bytes: Nullable(t.Integer({ description: "the memory estimate the worker was admitted with" })),
  memory_used_bytes: Nullable(t.Integer({ description: "what it really uses, where the device reports it (as of the last device detection)" })),
  in_flight: t.Integer({ description: "requests in flight: through the hive plus those reported to POST /v1/workers/{id}/activity" }),
  keep_alive_s: Nullable(t.Integer({ description: "the spawn's idle timeout; null = [idle] timeout_s" })),
  load_progress: Nullable(LoadProgress),
});
export type WorkerInfo = typeof WorkerInfo.static;

export const WorkerList = t.Object({ workers: t.Array(WorkerInfo) });

export const SpawnRequest = t.Object({
  model_ref: Field.modelRef(),
  backend: Field.identifier("cpu | cuda | metal (as the profile allows)"),
  device: Field.device(),
  model_path: t.Optional(t.String({ maxLength: 4096, description: "upstream field, ignored" })),
  profile: t.Optional(Field.identifier("hive addition: worker profile name")),
  revision: t.Optional(Field.revision()),
  keep_alive_s: t.Optional(t.Integer({ minimum: 0, maximum: MAX_KEEP_ALIVE_S, description: "hive addition: idle timeout of this worker in seconds (0 = never), instead of [idle] timeout_s" })),
  context: t.Optional(Field.context("hive addition: tokens of context (sizes the memory estimate; the profile's {context})")),
  force: t.Optional(t.Boolean({ description: "hive addition: admit without the memory check (logged); the memory still counts" })),
});
export type SpawnRequest = typeof SpawnRequest.static;

export const SpawnResponse = t.Object({ worker_id: t.String(), url: t.String(), state: t.Literal("loading") });
export type SpawnResponse = typeof SpawnResponse.static;

/** A worker's `POST /v1/workers/ready` (protocol §3); only worker_id is used. */
export const ReadyCallback = t.Object({
  worker_id: Field.workerId(),
  url: t.Optional(Field.url()),
  model_ref: t.Optional(Field.modelRef()),
  backend: t.Optional(Field.identifier("backend the worker runs")),
  device: t.Optional(Field.device()),
});
export type ReadyCallback = typeof ReadyCallback.static;

export const Heartbeat = t.Object({
  worker_id: Field.workerId(),
  timestamp: t.Optional(Field.timestamp()),
  health_status: t.Optional(t.String({ minLength: 1, maxLength: 32, description: '"healthy" | "degraded"' })),
});
export type Heartbeat = typeof Heartbeat.static;

export const StopRequest = t.Object({
  worker_id: Field.workerId(),
  drain: t.Optional(t.Boolean({ description: "wait for requests in flight first (default true; [workers] drain_timeout_s)" })),
});

/** `POST /v1/workers/{id}/activity`: what a caller that talks to the worker directly reports. */
export const ActivityReport = t.Object({
  in_flight: t.Optional(t.Integer({ minimum: 0, maximum: 100_000, description: "requests the caller has in flight to this worker now; absent = a touch" })),
});
export type ActivityReport = typeof ActivityReport.static;

export const StopResponse = t.Object({ message: t.String(), worker: WorkerInfo });

export const WorkerLogs = t.Object({ worker_id: t.String(), lines: t.Array(t.String()) });
