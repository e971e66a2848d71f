import { afterAll, beforeAll, expect, test } from "bun:test";
import { startTestHive, type TestHive } from "./helpers.ts";

let h: TestHive;
beforeAll(async () => {
  h = await startTestHive({ token: "openapi-token-0123456789" });
});
afterAll(() => h.close());

test("the OpenAPI spec is public and documents every route with its answers", async () => {
  const res = await h.api("/openapi/json", { auth: false });
  expect(res.status).toBe(200);
  const spec: any = await res.json();
  const routes = Object.entries<any>(spec.paths).flatMap(([path, ops]) => Object.entries<any>(ops).map(([m, op]) => ({ path, m, op })));
  const names = routes.map((r) => `${r.m.toUpperCase()} ${r.path}`);
  for (const expected of [
    "GET /v1/health",
    "GET /metrics",
    "POST /v1/workers/spawn",
    "POST /v1/workers/ready",
    "GET /v1/workers/list",
    "GET /v1/workers/{id}",
    "DELETE /v1/workers/{id}",
    "POST /v1/workers/stop",
    "POST /v1/workers/{id}/restart",
    "GET /v1/workers/{id}/logs",
    "POST /v1/heartbeat",
    "POST /v1/workers/ready/v1/heartbeat",
    "GET /v1/events",
    "POST /v1/models/download",
    "GET /v1/models/download/progress",
    "GET /v1/models/downloads",
    "DELETE /v1/models/download/{id}",
    "GET /v1/models",
    "DELETE /v1/models",
    "GET /v1/devices",
    "GET /v1/resources",
    "GET /v1/backends",
    "GET /v1/capacity",
    "POST /v1/shutdown",
  ]) {
    expect(names).toContain(expected);
  }
  for (const r of routes) {
    // GET /v1/capacity answers "fits" with an empty 204; POST /v1/shutdown accepts with 202.
    const success: Record<string, string> = { "get /v1/capacity": "204", "post /v1/shutdown": "202" };
    expect(r.op.responses?.[success[`${r.m} ${r.path}`] ?? "200"]).toBeDefined();
    expect(r.op.summary?.length).toBeGreaterThan(5);
  }
  const spawn = spec.paths["/v1/workers/spawn"].post;
  expect(spawn.requestBody.content["application/json"].schema).toEqual({ $ref: "#/components/schemas/SpawnRequest" });
  expect(spec.components.schemas.SpawnRequest.required).toEqual(["model_ref", "backend", "device"]);
  expect(spec.components.securitySchemes.bearer).toEqual({ type: "http", scheme: "bearer" });
});

test("the workers area's schemas are named components, referenced by its routes", async () => {
  const spec: any = await (await h.api("/openapi/json", { auth: false })).json();
  const schemas = spec.components.schemas;
  for (const name of ["WorkerInfo", "WorkerList", "SpawnRequest", "SpawnResponse", "ReadyCallback", "Heartbeat", "StopRequest", "StopResponse", "WorkerLogs"]) {
    expect(schemas[name]?.type).toBe("object");
  }
  const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
  const json = (op: any, status?: string) => (status ? op.responses[status] : op.requestBody).content["application/json"].schema;
  expect(json(spec.paths["/v1/workers/spawn"].post, "200")).toEqual(ref("SpawnResponse"));
  expect(json(spec.paths["/v1/workers/ready"].post)).toEqual(ref("ReadyCallback"));
  expect(json(spec.paths["/v1/heartbeat"].post)).toEqual(ref("Heartbeat"));
  expect(json(spec.paths["/v1/workers/list"].get, "200")).toEqual(ref("WorkerList"));
  expect(json(spec.paths["/v1/workers/{id}"].get, "200")).toEqual(ref("WorkerInfo"));
  expect(json(spec.paths["/v1/workers/stop"].post)).toEqual(ref("StopRequest"));
  expect(json(spec.paths["/v1/workers/stop"].post, "200")).toEqual(ref("StopResponse"));
  expect(json(spec.paths["/v1/workers/{id}/logs"].get, "200")).toEqual(ref("WorkerLogs"));
  // The wire keeps accepting a device index sent as a decimal string, as it always has.
  expect(schemas.SpawnRequest.properties.device.anyOf).toEqual([
    { format: "integer", default: 0, type: "string" },
    { minimum: 0, maximum: 255, type: "integer" },
  ]);
  expect(schemas.WorkerInfo.required).toEqual([
    "id", "url", "model_ref", "backend", "device", "state", "last_activity", "slots_total", "slots_available", "failed_health_checks",
    "pid", "restart_count", "last_restart", "last_heartbeat", "phase", "port", "profile", "model_path", "download_id", "started_at",
    "ready_at", "health_status", "last_exit", "exits", "next_restart_at", "crash_loop_reason",
    "memory_estimate_bytes", "memory_used_bytes", "in_flight", "keep_alive_s", "load_progress",
  ]);
});

test("the models area's schemas are named components, referenced by its routes", async () => {
  const spec: any = await (await h.api("/openapi/json", { auth: false })).json();
  for (const name of ["DownloadRequest", "DownloadAnswer", "DownloadJobInfo", "DownloadList", "CatalogEntry", "ModelList", "RemovedModel"]) {
    expect(spec.components.schemas[name]?.type).toBe("object");
  }
  const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
  const json = (op: any, status?: string) => (status ? op.responses[status] : op.requestBody).content["application/json"].schema;
  expect(json(spec.paths["/v1/models/download"].post)).toEqual(ref("DownloadRequest"));
  expect(json(spec.paths["/v1/models/download"].post, "200")).toEqual(ref("DownloadAnswer"));
  expect(json(spec.paths["/v1/models/downloads"].get, "200")).toEqual(ref("DownloadList"));
  expect(json(spec.paths["/v1/models/download/{id}"].delete, "200")).toEqual(ref("DownloadJobInfo"));
  expect(json(spec.paths["/v1/models"].get, "200")).toEqual(ref("ModelList"));
  expect(json(spec.paths["/v1/models"].delete, "200")).toEqual(ref("RemovedModel"));
});
