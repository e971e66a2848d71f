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
]);
export type ExitReason = typeof ExitReason.static;

export const WorkerExit = t.Object({
  reason: ExitReason,
  code: Nullable(t.Integer()),
  signal: Nullable(t.String()),
  message: t.String({ description: "one sentence: what happened" }),
  stderr_tail: t.Array(t.String(), { description: "last lines of the worker's stderr" }),
  at: SystemTime,
});
export type WorkerExit = typeof WorkerExit.static;

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

export const WorkerList = t.Object({ workers: t.Array(WorkerInfo) });

export const SpawnRequest = t.Object({
  model_ref: Field.modelRef(),
  backend: Field.identifier("cpu | cuda | metal (as the profile allows)"),
  device: Field.device(),
  model_path: t.Optional(t.String({ maxLength: 4096, description: "upstream field, ignored" })),
  profile: t.Optional(Field.identifier("hive addition: worker profile name")),
  revision: t.Optional(Field.revision()),
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

export const StopRequest = t.Object({ worker_id: Field.workerId() });

export const StopResponse = t.Object({ message: t.String(), worker: WorkerInfo });

export const WorkerLogs = t.Object({ worker_id: t.String(), lines: t.Array(t.String()) });
