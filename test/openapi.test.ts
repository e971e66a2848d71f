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
  ]) {
    expect(names).toContain(expected);
  }
  for (const r of routes) {
    expect(r.op.responses?.["200"]).toBeDefined();
    expect(r.op.summary?.length).toBeGreaterThan(5);
  }
  const spawn = spec.paths["/v1/workers/spawn"].post;
  expect(spawn.requestBody.content["application/json"].schema.required).toEqual(["model_ref", "backend", "device"]);
  expect(spec.components.securitySchemes.bearer).toEqual({ type: "http", scheme: "bearer" });
});
