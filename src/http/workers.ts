/** Worker routes: thin — validate, call the lifecycle manager, shape the answer. */
import { Elysia, t } from "elysia";
import { WorkerInfo, type WorkerRegistry } from "../workers/registry.ts";
import type { WorkerLifecycleManager } from "../workers/worker-lifecycle.ts";
import { notFound } from "../shared/errors.ts";
import { ErrorResponse, Field, MessageResponse, errorResponses } from "./schemas.ts";

const SpawnBody = t.Object({
  model_ref: Field.modelRef(),
  backend: Field.identifier("cpu | cuda | metal (as the profile allows)"),
  device: Field.device(),
  model_path: t.Optional(t.String({ maxLength: 4096, description: "upstream field, ignored" })),
  profile: t.Optional(Field.identifier("hive addition: worker profile name")),
  revision: t.Optional(Field.revision()),
});
const SpawnResponse = t.Object({ worker_id: t.String(), url: t.String(), state: t.Literal("loading") });
const ReadyBody = t.Object({
  worker_id: Field.workerId(),
  url: t.Optional(Field.url()),
  model_ref: t.Optional(Field.modelRef()),
  backend: t.Optional(Field.identifier("backend the worker runs")),
  device: t.Optional(Field.device()),
});
const HeartbeatBody = t.Object({
  worker_id: Field.workerId(),
  timestamp: t.Optional(Field.timestamp()),
  health_status: t.Optional(t.String({ minLength: 1, maxLength: 32, description: '"healthy" | "degraded"' })),
});
const WorkerIdBody = t.Object({ worker_id: Field.workerId() });
const IdParams = t.Object({ id: Field.workerId() });
const StopResponse = t.Object({ message: t.String(), worker: WorkerInfo });

export const workersController = (lifecycle: WorkerLifecycleManager, registry: WorkerRegistry) => {
  const find = (id: string) => {
    const w = registry.get(id);
    if (!w) throw notFound("WORKER_NOT_FOUND", `no worker ${id} is known to this hive`);
    return w;
  };
  const heartbeat = ({ body }: { body: typeof HeartbeatBody.static }) => lifecycle.heartbeat(body);
  const heartbeatHook = {
    body: HeartbeatBody,
    response: { 200: MessageResponse, ...errorResponses },
    detail: { tags: ["workers"], summary: "Worker heartbeat (no Bearer needed for a worker this hive spawned)" },
  };
  return new Elysia({ name: "hive.workers" })
    .post("/v1/workers/spawn", ({ body }) => lifecycle.spawn(body), {
      body: SpawnBody,
      response: { 200: SpawnResponse, ...errorResponses, 409: ErrorResponse, 503: ErrorResponse, 507: ErrorResponse },
      detail: { tags: ["workers"], summary: "Spawn a worker; answers at once with state loading" },
    })
    .post("/v1/workers/ready", ({ body }) => lifecycle.readyCallback(body), {
      body: ReadyBody,
      response: { 200: MessageResponse, ...errorResponses },
      detail: { tags: ["workers"], summary: "Worker ready callback (no Bearer needed for a loading worker this hive spawned)" },
    })
    .get("/v1/workers/list", () => ({ workers: registry.list() }), {
      response: { 200: t.Object({ workers: t.Array(WorkerInfo) }), ...errorResponses },
      detail: { tags: ["workers"], summary: "Live workers (upstream WorkerInfo shape plus hive fields)" },
    })
    .get("/v1/workers/:id", ({ params }) => find(params.id), {
      params: IdParams,
      response: { 200: WorkerInfo, ...errorResponses },
      detail: { tags: ["workers"], summary: "One worker; a gone worker's final record stays readable for a while" },
    })
    .post(
      "/v1/workers/stop",
      async ({ body }) => ({ message: "Worker stopped", worker: await lifecycle.stop(body.worker_id) }),
      {
        body: WorkerIdBody,
        response: { 200: StopResponse, ...errorResponses },
        detail: { tags: ["workers"], summary: "Graceful stop (SIGTERM, grace, SIGKILL); answers when the process is gone" },
      },
    )
    .delete("/v1/workers/:id", ({ params }) => lifecycle.stop(params.id), {
      params: IdParams,
      response: { 200: WorkerInfo, ...errorResponses },
      detail: { tags: ["workers"], summary: "Graceful stop; answers with the final record when the process is gone" },
    })
    .post("/v1/workers/:id/restart", ({ params }) => lifecycle.restart(params.id), {
      params: IdParams,
      response: { 200: WorkerInfo, ...errorResponses, 409: ErrorResponse },
      detail: { tags: ["workers"], summary: "Restart now (also the operator's retry of a crash-looping worker)" },
    })
    .get(
      "/v1/workers/:id/logs",
      ({ params, query }) => ({ worker_id: params.id, lines: lifecycle.logs(params.id, query.tail ?? 100) }),
      {
        params: IdParams,
        query: t.Object({ tail: t.Optional(Field.queryInteger("tail", 1, 10000)) }),
        response: { 200: t.Object({ worker_id: t.String(), lines: t.Array(t.String()) }), ...errorResponses },
        detail: { tags: ["workers"], summary: "Last lines of the worker's output (stdout and stderr)" },
      },
    )
    .post("/v1/heartbeat", heartbeat, heartbeatHook)
    // Upstream workers build this path by mistake (protocol §3): served as an alias.
    .post("/v1/workers/ready/v1/heartbeat", heartbeat, heartbeatHook);
};
