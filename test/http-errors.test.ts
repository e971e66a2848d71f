import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Elysia, t } from "elysia";
import { createApp } from "../src/app.ts";
import { serve, type HiveServer } from "../src/server.ts";
import { HiveError } from "../src/shared/errors.ts";
import { VERSION } from "../src/version.ts";
import { defaultConfig, memoryLogger } from "./helpers.ts";

describe("error bodies", () => {
  let server: HiveServer;
  const logger = memoryLogger();
  beforeAll(() => {
    const probe = new Elysia()
      .post("/v1/probe", ({ body }) => ({ got: body.n }), { body: t.Object({ n: t.Integer({ minimum: 1 }) }) })
      .get("/v1/boom", () => {
        throw new Error("secret internal detail /etc/x");
      })
      .get("/v1/domain", () => {
        throw new HiveError(507, "INSUFFICIENT_MEMORY", "needs 4 GiB, 1 GiB free", { required_bytes: 4 });
      });
    const config = defaultConfig("/tmp");
    config.server.body_limit_bytes = 2048;
    const app = createApp({ config, logger, controllers: [probe] });
    server = serve((r) => app.fetch(r), { host: "127.0.0.1", port: 0, bodyLimitBytes: 2048, logger });
  });
  afterAll(() => server.stop(true));

  const post = (body: string, headers: Record<string, string> = { "content-type": "application/json" }) =>
    fetch(server.url + "/v1/probe", { method: "POST", body, headers });

  test("health has exactly the upstream shape", async () => {
    const res = await fetch(server.url + "/v1/health");
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: "alive", version: VERSION, api_version: "v1" });
  });

  test("400 on schema violation names the field and what is wrong with it", async () => {
    const res = await post(JSON.stringify({ n: 0 }));
    expect(res.status).toBe(400);
    // The same wording as config errors (TypeBox's), not the union summary "should be one of: 'integer', 'integer'".
    expect(await res.json()).toEqual({ error: { code: "INVALID_INPUT", message: "n: Expected integer to be greater or equal to 1" } });
  });

  test("400 on malformed JSON", async () => {
    const res = await post("{not json");
    expect(res.status).toBe(400);
    expect(await res.json()).toEqual({ error: { code: "INVALID_JSON", message: "request body is not valid JSON" } });
  });

  test("404 for an unknown route", async () => {
    const res = await fetch(server.url + "/v1/nothing-here");
    expect(res.status).toBe(404);
    expect((await res.json() as any)).toEqual({ error: { code: "NOT_FOUND", message: "no route GET /v1/nothing-here" } });
  });

  test("413 when the body is over the limit", async () => {
    const res = await post(JSON.stringify({ n: 1, pad: "x".repeat(4096) })); // 4112 bytes
    expect(res.status).toBe(413);
    expect(await res.json()).toEqual({ error: { code: "PAYLOAD_TOO_LARGE", message: "request body is 4112 bytes; the limit is 2048 bytes" } });
    // A chunked body (no Content-Length) is cut at the limit too; a small one still passes.
    const chunked = (text: string) =>
      new ReadableStream({
        start(c) {
          c.enqueue(new TextEncoder().encode(text));
          c.close();
        },
      });
    const big = await fetch(server.url + "/v1/probe", { method: "POST", body: chunked("x".repeat(5000)), headers: { "content-type": "application/json" } });
    expect(big.status).toBe(413);
    expect(await big.json()).toEqual({ error: { code: "PAYLOAD_TOO_LARGE", message: "request body is too large; the limit is 2048 bytes" } });
    const small = await fetch(server.url + "/v1/probe", { method: "POST", body: chunked('{"n":3}'), headers: { "content-type": "application/json" } });
    expect((await small.json() as any)).toEqual({ got: 3 });
  });

  test("500 without internals, logged instead", async () => {
    const res = await fetch(server.url + "/v1/boom");
    expect(res.status).toBe(500);
    const text = await res.text();
    expect(JSON.parse(text)).toEqual({ error: { code: "INTERNAL", message: "internal error" } });
    expect(text).not.toContain("secret");
    expect(logger.lines.join("\n")).toContain("secret internal detail");
  });

  test("domain errors keep their status, code and details", async () => {
    const res = await fetch(server.url + "/v1/domain");
    expect(res.status).toBe(507);
    expect((await res.json() as any)).toEqual({
      error: { code: "INSUFFICIENT_MEMORY", message: "needs 4 GiB, 1 GiB free", details: { required_bytes: 4 } },
    });
  });

  test("every request is logged with method, path, status, duration and correlation id; a successful health poll at debug", async () => {
    const lineOf = async (path: string) => {
      const res = await fetch(server.url + path);
      const id = res.headers.get("x-correlation-id");
      expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
      return { id, status: res.status, line: logger.lines.map((l) => JSON.parse(l)).find((l) => l.msg === "request" && l.correlation_id === id) };
    };
    const ts = expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const missing = await lineOf("/v1/no-such-route");
    expect(missing.line).toEqual({ ts, level: "info", msg: "request", method: "GET", path: "/v1/no-such-route", status: 404, ms: expect.any(Number), correlation_id: missing.id });
    // queen-rbee polls health: its successful answers would flood journald at info.
    const health = await lineOf("/v1/health");
    expect(health.line).toEqual({ ts, level: "debug", msg: "request", method: "GET", path: "/v1/health", status: 200, ms: expect.any(Number), correlation_id: health.id });
  });

  test("the OpenAPI spec lists the routes with their schemas", async () => {
    const spec = (await (await fetch(server.url + "/openapi/json")).json() as any);
    expect(spec.openapi).toMatch(/^3\./);
    expect(spec.paths["/v1/health"].get).toBeDefined();
    expect(spec.paths["/v1/probe"].post.requestBody).toBeDefined();
  });
});
