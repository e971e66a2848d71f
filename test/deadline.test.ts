/**
 * X-Deadline and X-Correlation-ID: an expired deadline is answered 504 before any work; the time
 * left bounds the outbound calls made for the request (a worker behind the pass-through, the hub
 * reads of a spawn, HttpClient calls); both headers travel on to the worker; every answer and the
 * request log line carry the correlation id; the answer waits for what the request holds.
 */
import { afterEach, expect, test } from "bun:test";
import { HttpClient } from "../src/shared/http-client.ts";
import { contextOf, createRequestContext } from "../src/shared/correlation.ts";
import { serve } from "../src/server.ts";
import { FakeHub } from "./fixtures/fake-hub.ts";
import { memoryLogger, rejection, startTestHive, type TestHive } from "./helpers.ts";

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function hive(opts: Parameters<typeof startTestHive>[0] = {}): Promise<TestHive> {
  const h = await startTestHive(opts);
  cleanups.push(() => h.close());
  return h;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

test("an expired X-Deadline is answered 504 DEADLINE_EXCEEDED after auth and before any work, on every route; a malformed one is 400", async () => {
  const h = await hive({ token: "deadline-token-0123456789" });
  const spawned: string[] = [];
  h.bus.on("spawned", (e) => spawned.push(e.worker_id));
  const past = String(Date.now() - 1);
  const spawn = await h.api("/v1/workers/spawn", { json: { model_ref: h.modelRef, backend: "cpu", device: 0 }, headers: { "x-deadline": past } });
  expect(spawn.status).toBe(504);
  expect(await spawn.json()).toEqual({ error: { code: "DEADLINE_EXCEEDED", message: "the request's deadline (X-Deadline) has passed" } });
  expect(spawn.headers.get("x-correlation-id")).toMatch(UUID);
  const health = await h.api("/v1/health", { headers: { "x-deadline": past } });
  expect(health.status).toBe(504);
  // Auth first: an unauthenticated caller learns nothing but its 401.
  expect((await h.api("/v1/workers/list", { auth: false, headers: { "x-deadline": past } })).status).toBe(401);
  const bad = await h.api("/v1/health", { headers: { "x-deadline": "soon" } });
  expect(bad.status).toBe(400);
  expect(await bad.json()).toEqual({ error: { code: "INVALID_INPUT", message: "header X-Deadline: must be a unix time in milliseconds", details: { field: "X-Deadline" } } });
  expect((await h.api("/v1/health", { headers: { "x-deadline": String(Date.now() + 60_000) } })).status).toBe(200);
  expect(((await (await h.api("/v1/workers/list")).json()) as any).workers).toEqual([]);
  expect(spawned).toEqual([]);
});

test("the pass-through forwards X-Deadline and the correlation id, and the deadline cuts a worker that does not finish in time", async () => {
  const h = await hive({ workerEnv: { FAKE_WORKER_TOKEN_GATE: "1" } });
  const { worker_id } = await h.spawn();
  const w = await h.waitState(worker_id, (x) => x.state === "idle", "idle");

  const deadline = String(Date.now() + 60_000);
  const echo = await h.api(`/v1/workers/${worker_id}/proxy/fake/echo/x`, { headers: { "x-deadline": deadline, "x-correlation-id": "corr-proxy-7" } });
  expect(echo.headers.get("x-correlation-id")).toBe("corr-proxy-7");
  const seen = ((await echo.json()) as any).headers;
  expect(seen["x-deadline"]).toBe(deadline);
  expect(seen["x-correlation-id"]).toBe("corr-proxy-7");
  // Without one, the id the hive made is the one the worker gets and the caller sees.
  const made = await h.api(`/v1/workers/${worker_id}/proxy/fake/echo/y`);
  expect(made.headers.get("x-correlation-id")).toMatch(UUID);
  expect(((await made.json()) as any).headers["x-correlation-id"]).toBe(made.headers.get("x-correlation-id"));

  // Tokens are held by the gate: the worker never finishes, the deadline ends the exchange.
  const res = await h.api(`/v1/workers/${worker_id}/inference`, { json: { job_id: "late" }, headers: { "x-deadline": String(Date.now() + 300) } });
  expect(res.status).toBe(200);
  const body = await res.text().then(
    (t) => ({ ended: "closed", text: t }),
    (e) => ({ ended: "error", text: String(e) }),
  );
  expect(body.text).not.toContain("[DONE]");
  const stats = async () => (await (await fetch(`${w.url}/fake/stats`)).json()) as Record<string, number>;
  await waitUntil(async () => (await stats()).inference_cancelled === 1, "the worker's request cancelled");
  expect(await stats()).toMatchObject({ inference_started: 1, inference_finished: 0, inference_cancelled: 1, in_flight: 0 });
  expect((await h.waitState(worker_id, (x) => x.in_flight === 0, "slot released")).slots_available).toBe(1);
});

test("a spawn's hub reads are bounded by its deadline: 504 with nothing admitted or started", async () => {
  const hub = await FakeHub.start({ ggufHeaders: true });
  cleanups.push(() => hub.stop());
  hub.addRepo({ id: "org/slow-GGUF", files: [{ path: "slow.Q4_K_M.gguf", size: 4 * 1024 * 1024, seed: 9 }] });
  // The GGUF header read (a range request) gets 100 bytes, then nothing.
  hub.addFault({ kind: "stall", atByte: 100, ms: 60_000, on: "any", times: 10 });
  const h = await hive({ env: { HF_ENDPOINT: hub.url } });
  const started = performance.now();
  const res = await h.api("/v1/workers/spawn", { json: { model_ref: "hf:org/slow-GGUF", backend: "cpu", device: 0 }, headers: { "x-deadline": String(Date.now() + 400) } });
  expect(res.status).toBe(504);
  expect(((await res.json()) as any).error.code).toBe("DEADLINE_EXCEEDED");
  expect(performance.now() - started).toBeLessThan(10_000); // hang guard: without the bound it waits for the hub's own timeouts
  expect(hub.stalledCount).toBeGreaterThan(0);
  expect(((await (await h.api("/v1/workers/list")).json()) as any).workers).toEqual([]);
  expect(h.resources.ledger.list()).toEqual([]);
  hub.releaseStalls();
});

test("HttpClient: a call made for a request carries its deadline and correlation id and ends at the deadline", async () => {
  let seen: Headers | null = null;
  const silent = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch: (req) => {
      seen = req.headers;
      return new Promise<Response>(() => {}); // never answers
    },
  });
  cleanups.push(() => silent.stop(true));
  const http = new HttpClient();
  const deadline = Date.now() + 200;
  const e = await rejection(http.request(`http://127.0.0.1:${silent.port}/slow`, { timeoutMs: 30_000, context: { correlationId: "corr-out-1", deadline } }));
  expect([e.status, e.code]).toEqual([504, "DEADLINE_EXCEEDED"]);
  expect(Date.now()).toBeGreaterThanOrEqual(deadline);
  expect(seen!.get("x-deadline")).toBe(String(deadline));
  expect(seen!.get("x-correlation-id")).toBe("corr-out-1");
  // Past the deadline nothing is sent at all.
  seen = null;
  const late = await rejection(http.request(`http://127.0.0.1:${silent.port}/slow`, { timeoutMs: 30_000, context: { correlationId: "c", deadline: Date.now() - 1 } }));
  expect(late.code).toBe("DEADLINE_EXCEEDED");
  expect(seen).toBeNull();
});

test("correlation ids: taken when valid, replaced when not, echoed, logged, and the answer waits for what the request holds", async () => {
  const logger = memoryLogger();
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  let released = false;
  const server = serve(
    (req) => {
      contextOf(req).hold(gate.then(() => (released = true)));
      return new Response("ok");
    },
    { host: "127.0.0.1", port: 0, bodyLimitBytes: 1024, logger },
  );
  cleanups.push(() => server.stop(true));
  setTimeout(open, 50);
  const held = await fetch(`${server.url}/x`, { headers: { "x-correlation-id": "abc-123" } });
  expect(released).toBe(true); // the answer came only after the held work
  expect(held.headers.get("x-correlation-id")).toBe("abc-123");
  const tooLong = await fetch(`${server.url}/x`, { headers: { "x-correlation-id": "x".repeat(129) } });
  expect(tooLong.headers.get("x-correlation-id")).toMatch(UUID);
  const spaced = await fetch(`${server.url}/x`, { headers: { "x-correlation-id": "a b" } });
  expect(spaced.headers.get("x-correlation-id")).toMatch(UUID);
  const logged = logger.lines.map((l) => JSON.parse(l)).filter((l) => l.msg === "request").map((l) => l.correlation_id);
  expect(logged).toEqual(["abc-123", tooLong.headers.get("x-correlation-id"), spaced.headers.get("x-correlation-id")]);
  expect(createRequestContext(new Headers({ "x-correlation-id": "ok" })).correlationId).toBe("ok");
});

async function waitUntil(fn: () => Promise<boolean>, what: string): Promise<void> {
  const until = performance.now() + 5000;
  while (!(await fn())) {
    if (performance.now() > until) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(10);
  }
}
