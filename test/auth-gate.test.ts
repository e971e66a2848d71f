/**
 * Auth comes first: every protected route answers the exact upstream 401 before its body is read or
 * validated, whatever the body is. Routing uses the path alone, whatever the Host header says.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startTestHive, type TestHive } from "./helpers.ts";

const TOKEN = "gate-token-0123456789abcdef";
const MISSING = { error: { code: "MISSING_API_KEY", message: "Missing API key" } };
const INVALID = { error: { code: "INVALID_API_KEY", message: "Invalid or missing API key" } };
const PUBLIC = new Set(["/v1/health", "/metrics", "/openapi", "/openapi/json"]);

let h: TestHive;
beforeAll(async () => {
  h = await startTestHive({ token: TOKEN, config: { server: { body_limit_bytes: 64 * 1024 } } });
});
afterAll(() => h.close());

/** Every non-public operation of the served OpenAPI document, with ids filled in. */
async function protectedRoutes(): Promise<Array<{ method: string; path: string }>> {
  const spec = (await (await fetch(`${h.url}/openapi/json`)).json()) as { paths: Record<string, Record<string, unknown>> };
  const routes: Array<{ method: string; path: string }> = [];
  for (const [path, ops] of Object.entries(spec.paths)) {
    if (PUBLIC.has(path)) continue;
    for (const method of Object.keys(ops)) {
      routes.push({ method: method.toUpperCase(), path: path.replace(/\{[^}]+\}/g, "worker-x") + "?tail=-5&id=1" });
    }
  }
  return routes;
}

/** Bodies that would fail validation, parsing or the size limit if they were looked at. */
function badBodies(): Array<{ what: string; init: RequestInit }> {
  const big = "x".repeat(256 * 1024);
  const chunked = () =>
    new ReadableStream<Uint8Array>({
      start(c) {
        for (let i = 0; i < 8; i++) c.enqueue(new TextEncoder().encode(big));
        c.close();
      },
    });
  return [
    { what: "wrong types", init: { body: JSON.stringify({ model_ref: 1, worker_id: 7 }), headers: { "content-type": "application/json" } } },
    { what: "invalid JSON", init: { body: "{not json", headers: { "content-type": "application/json" } } },
    { what: "oversize (declared)", init: { body: big, headers: { "content-type": "application/json" } } },
    { what: "oversize (chunked)", init: { body: chunked(), headers: { "content-type": "application/json" } } },
    { what: "no body", init: {} },
  ];
}

describe("401 before the body", () => {
  test("the spec lists the protected routes this test sweeps", async () => {
    const routes = await protectedRoutes();
    const keys = routes.map((r) => `${r.method} ${r.path.split("?")[0]}`);
    expect(keys).toContain("POST /v1/workers/spawn");
    expect(keys).toContain("POST /v1/workers/ready");
    expect(keys).toContain("GET /v1/workers/list");
    expect(keys).toContain("DELETE /v1/models");
  });

  test("every protected route, without a token, with any body → MISSING_API_KEY", async () => {
    const failures: string[] = [];
    for (const { method, path } of await protectedRoutes()) {
      for (const { what, init } of badBodies()) {
        const withBody = method !== "GET" && method !== "HEAD";
        const res = await fetch(h.url + path, { method, ...(withBody ? init : { headers: init.headers }) });
        const body = await res.text();
        // A HEAD answer has no body by definition: its status says it.
        const expected = method === "HEAD" ? "" : JSON.stringify(MISSING);
        if (res.status !== 401 || body !== expected) failures.push(`${method} ${path} (${what}): ${res.status} ${body.slice(0, 120)}`);
      }
    }
    expect(failures).toEqual([]);
  });

  test("every protected route, with a wrong token, with any body → INVALID_API_KEY", async () => {
    const failures: string[] = [];
    for (const { method, path } of await protectedRoutes()) {
      for (const { what, init } of badBodies()) {
        const withBody = method !== "GET" && method !== "HEAD";
        const headers = { ...(init.headers as Record<string, string>), authorization: "Bearer wrong-token-value-123456" };
        const res = await fetch(h.url + path, { method, ...(withBody ? init : {}), headers });
        const body = await res.text();
        const expected = method === "HEAD" ? "" : JSON.stringify(INVALID);
        if (res.status !== 401 || body !== expected) failures.push(`${method} ${path} (${what}): ${res.status} ${body.slice(0, 120)}`);
      }
    }
    expect(failures).toEqual([]);
  });

  test("with the right token the same bad bodies get their real answer", async () => {
    const spawn = (init: RequestInit) =>
      h.api("/v1/workers/spawn", { method: "POST", ...init, headers: { ...(init.headers as Record<string, string>) } });
    const [types, json, declared, chunked] = badBodies();
    expect((await (await spawn(types!.init)).json()) as any).toMatchObject({ error: { code: "INVALID_INPUT" } });
    expect((await (await spawn(json!.init)).json()) as any).toMatchObject({ error: { code: "INVALID_JSON" } });
    expect((await spawn(declared!.init)).status).toBe(413);
    expect((await spawn(chunked!.init)).status).toBe(413);
  });

  test("a worker callback without a token: a malformed body is 401, an unknown worker is 404", async () => {
    const res = await fetch(`${h.url}/v1/workers/ready`, { method: "POST", body: "{not json", headers: { "content-type": "application/json" } });
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual(MISSING);
    const stray = await fetch(`${h.url}/v1/workers/ready`, {
      method: "POST",
      body: JSON.stringify({ worker_id: "worker-nobody" }),
      headers: { "content-type": "application/json" },
    });
    expect(stray.status).toBe(404);
    expect(((await stray.json()) as any).error.code).toBe("WORKER_NOT_FOUND");
  });
});

/** One raw HTTP/1.x exchange, so the Host header is exactly what the test says. */
async function rawRequest(text: string): Promise<{ status: number; body: string }> {
  const port = Number(new URL(h.url).port);
  let out = "";
  const done = Promise.withResolvers<void>();
  const socket = await Bun.connect({
    hostname: "127.0.0.1",
    port,
    socket: {
      data(_s, d) {
        out += d.toString();
      },
      close() {
        done.resolve();
      },
    },
  });
  socket.write(text);
  await Promise.race([done.promise, Bun.sleep(5000)]);
  socket.end();
  const [head = "", body = ""] = out.split("\r\n\r\n");
  return { status: Number(head.split(" ")[1]), body };
}

describe("Host header", () => {
  test("a 1-character Host does not shift the routed path", async () => {
    const r = await rawRequest(`GET /zz/v1/workers/list HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${TOKEN}\r\nConnection: close\r\n\r\n`);
    expect(r.status).toBe(404);
    expect(JSON.parse(r.body)).toEqual({ error: { code: "NOT_FOUND", message: "no route GET /zz/v1/workers/list" } });
  });

  test("a 3-character Host routes the real path", async () => {
    const r = await rawRequest(`GET /v1/workers/list HTTP/1.1\r\nHost: abc\r\nAuthorization: Bearer ${TOKEN}\r\nConnection: close\r\n\r\n`);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body)).toEqual({ workers: [] });
  });

  test("a request without Host gets 400 MISSING_HOST, not 500", async () => {
    for (const request of [
      `GET /v1/health HTTP/1.0\r\n\r\n`,
      `GET /v1/health HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n`,
    ]) {
      const r = await rawRequest(request);
      expect(r.status).toBe(400);
      expect(JSON.parse(r.body)).toEqual({ error: { code: "MISSING_HOST", message: "the request has no Host header" } });
    }
  });
});

describe("auth before the deadline (found by test/fuzz)", () => {
  // An unauthenticated caller learns nothing but 401, whatever X-Deadline says: a malformed one
  // (400 INVALID_INPUT) or a past one (504) would answer it before its token was checked.
  test("a protected route without a valid token gets the exact 401 with a malformed or past X-Deadline", async () => {
    const failures: string[] = [];
    for (const deadline of ["soon", "-1", String(Date.now() - 1000)]) {
      for (const [auth, expected] of [[undefined, MISSING], ["Bearer wrong-token-value-123456", INVALID]] as const) {
        const headers: Record<string, string> = { "x-deadline": deadline };
        if (auth) headers.authorization = auth;
        const res = await fetch(`${h.url}/v1/workers/list`, { headers });
        const body = await res.text();
        if (res.status !== 401 || body !== JSON.stringify(expected)) failures.push(`X-Deadline ${deadline}, ${auth ?? "no token"}: ${res.status} ${body}`);
      }
    }
    expect(failures).toEqual([]);
  });
});
