/** Worker routes: thin — validate, call the lifecycle manager, shape the answer. */
import { Elysia, t } from "elysia";
import { unknownWorker, type WorkerRegistry, type WorkerSnapshot } from "../workers/registry.ts";
import type { WorkerLifecycleManager } from "../workers/worker-lifecycle.ts";
import {
  Heartbeat,
  ReadyCallback,
  SpawnRequest,
  SpawnResponse,
  StopRequest,
  StopResponse,
  WorkerInfo,
  WorkerList,
  WorkerLogs,
} from "../workers/schemas.ts";
import { ErrorResponse, Field, MessageResponse, errorResponses, namedModels, wireRequest } from "./schemas.ts";
import { contextOf } from "../shared/correlation.ts";

/** A registry snapshot as the answer: it is only serialized, so its read-only typing ends here. */
const wire = (w: WorkerSnapshot) => w as WorkerInfo;

const IdParams = t.Object({ id: Field.workerId() });
const LogsQuery = t.Object({ tail: t.Optional(Field.queryInteger("tail", 1, 10000)) });
/** `?drain=false`: stop or restart at once instead of waiting for the requests in flight. */
const DrainQuery = t.Object({
  drain: t.Optional(t.Union([t.Literal("true"), t.Literal("false")], { error: "query parameter drain: must be true or false" })),
});
const drainOf = (query: { drain?: "true" | "false" }, body?: { drain?: boolean }) => ({ drain: query.drain !== "false" && body?.drain !== false });

export const workersController = (lifecycle: WorkerLifecycleManager, registry: WorkerRegistry) => {
  const find = (id: string) => {
    const w = registry.get(id);
    if (!w) throw unknownWorker(id);
    return wire(w);
  };
  const heartbeat = ({ body }: { body: Heartbeat }) => lifecycle.heartbeat(body);
  const heartbeatHook = {
    body: "Heartbeat" as const,
    response: { 200: MessageResponse, ...errorResponses },
    detail: { tags: ["workers"], summary: "Worker heartbeat (no Bearer needed for a worker this hive spawned)" },
  };
  return new Elysia({ name: "hive.workers" })
    .model(
      namedModels({
        SpawnRequest: wireRequest(SpawnRequest),
        SpawnResponse,
        ReadyCallback: wireRequest(ReadyCallback),
        Heartbeat: wireRequest(Heartbeat),
        StopRequest: wireRequest(StopRequest),
        StopResponse,
        WorkerInfo,
        WorkerList,
        WorkerLogs,
      }),
    )
    .post("/v1/workers/spawn", ({ body, request }) => lifecycle.spawn(body, contextOf(request)), {
      body: "SpawnRequest",
      response: { 200: "SpawnResponse", ...errorResponses, 409: ErrorResponse, 503: ErrorResponse, 507: ErrorResponse },
      detail: { tags: ["workers"], summary: "Spawn a worker; answers at once with state loading" },
    })
    .post("/v1/workers/ready", ({ body }) => lifecycle.readyCallback(body), {
      body: "ReadyCallback",
      response: { 200: MessageResponse, ...errorResponses },
      detail: { tags: ["workers"], summary: "Worker ready callback (no Bearer needed for a loading worker this hive spawned)" },
    })
    .get("/v1/workers/list", () => ({ workers: registry.list().map(wire) }), {
      response: { 200: "WorkerList", ...errorResponses },
      detail: { tags: ["workers"], summary: "Live workers (upstream WorkerInfo shape plus hive fields)" },
    })
    .get("/v1/workers/:id", ({ params }) => find(params.id), {
      params: IdParams,
      response: { 200: "WorkerInfo", ...errorResponses },
      detail: { tags: ["workers"], summary: "One worker; a gone worker's final record stays readable for a while" },
    })
    .post("/v1/workers/stop", async ({ body, query }) => ({ message: "Worker stopped", worker: wire(await lifecycle.stop(body.worker_id, undefined, drainOf(query, body))) }), {
      query: DrainQuery,
      body: "StopRequest",
      response: { 200: "StopResponse", ...errorResponses },
      detail: { tags: ["workers"], summary: "Graceful stop (requests in flight drained first unless drain is false; SIGTERM, grace, SIGKILL); answers when the process is gone" },
    })
    .delete("/v1/workers/:id", async ({ params, query }) => wire(await lifecycle.stop(params.id, undefined, drainOf(query))), {
      query: DrainQuery,
      params: IdParams,
      response: { 200: "WorkerInfo", ...errorResponses },
      detail: { tags: ["workers"], summary: "Graceful stop (drained first unless ?drain=false); answers with the final record when the process is gone" },
    })
    .post("/v1/workers/:id/restart", async ({ params, query }) => wire(await lifecycle.restart(params.id, drainOf(query))), {
      query: DrainQuery,
      params: IdParams,
      response: { 200: "WorkerInfo", ...errorResponses, 409: ErrorResponse },
      detail: { tags: ["workers"], summary: "Restart (after draining requests in flight unless ?drain=false); also the operator's retry of a crash-looping worker" },
    })
    .get("/v1/workers/:id/logs", ({ params, query }) => ({ worker_id: params.id, lines: lifecycle.logs(params.id, query.tail ?? 100) }), {
      params: IdParams,
      query: LogsQuery,
      response: { 200: "WorkerLogs", ...errorResponses },
      detail: { tags: ["workers"], summary: "Last lines of the worker's output (stdout and stderr)" },
    })
    .post("/v1/heartbeat", heartbeat, heartbeatHook)
    // Upstream workers build this path by mistake (protocol §3): served as an alias.
    .post("/v1/workers/ready/v1/heartbeat", heartbeat, heartbeatHook);
};
