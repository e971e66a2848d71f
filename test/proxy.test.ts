/**
 * Worker traffic through the hive, with real fake-worker processes: the streamed inference
 * pass-through, the proxy to any path, slots / busy / queue / 429, the activity route, drains.
 * Gated tokens (FAKE_WORKER_TOKEN_GATE) hold requests in flight for as long as a test needs.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { startTestHive, waitFor, type TestHive } from "./helpers.ts";

const TOKEN = "proxy-token-0123456789abcdef";
const hives: TestHive[] = [];
afterEach(async () => {
  await Promise.all(hives.splice(0).map((h) => h.close()));
});

async function hive(opts: Parameters<typeof startTestHive>[0] = {}) {
  const h = await startTestHive({ token: TOKEN, ...opts });
  hives.push(h);
  return h;
}

/** A spawned worker, once idle. */
async function idleWorker(h: TestHive, body: Record<string, unknown> = {}) {
  const { worker_id } = await h.spawn(body);
  return h.waitState(worker_id, (w) => w.state === "idle", "idle");
}

const epochMs = () => performance.timeOrigin + performance.now();

/** The SSE events of a streamed answer one at a time, each with the time its bytes arrived. */
function events(res: Response) {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  let arrivedAt = 0;
  return {
    async next(): Promise<{ data: string; at: number } | null> {
      for (;;) {
        const end = buffered.indexOf("\n\n");
        if (end >= 0) {
          const raw = buffered.slice(0, end);
          buffered = buffered.slice(end + 2);
          const data = raw.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
          return { data, at: arrivedAt };
        }
        const { done, value } = await reader.read();
        if (done) return null;
        arrivedAt = epochMs();
        buffered += decoder.decode(value, { stream: true });
      }
    },
    async rest(): Promise<string[]> {
      const out: string[] = [];
      for (let e = await this.next(); e; e = await this.next()) out.push(e.data);
      return out;
    },
  };
}

const inference = (h: TestHive, id: string, body: unknown = { job_id: "j1" }, init: RequestInit = {}) =>
  h.api(`/v1/workers/${id}/inference`, { json: body, ...init });
const fakeStats = async (w: any) => (await (await fetch(`${w.url}/fake/stats`)).json()) as Record<string, number>;
const release = (w: any, n = 1) => fetch(`${w.url}/fake/next?n=${n}`, { method: "POST" });
const openGate = (w: any) => fetch(`${w.url}/fake/open`, { method: "POST" });
const record = async (h: TestHive, id: string) => (await (await h.api(`/v1/workers/${id}`)).json()) as any;

describe("inference pass-through", () => {
  test("tokens arrive as the worker emits them, long before it has made the last one", async () => {
    const h = await hive({ workerEnv: { FAKE_WORKER_TOKEN_MS: "200", FAKE_WORKER_TOKENS: "5" } });
    const w = await idleWorker(h);
    const res = await inference(h, w.id, { job_id: "paced" });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/event-stream");
    expect(res.headers.get("x-correlation-id")).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    const stream = events(res);
    expect(JSON.parse((await stream.next())!.data)).toEqual({ type: "started", job_id: "paced", model: "model", started_at: "0" });
    const tokens: Array<{ i: number; t: string; emitted_at: number; at: number }> = [];
    for (let i = 0; i < 5; i++) {
      const e = (await stream.next())!;
      tokens.push({ ...JSON.parse(e.data), at: e.at });
    }
    expect(tokens.map((x) => [x.i, x.t])).toEqual([[0, "Hello"], [1, ","], [2, " world"], [3, "!"], [4, "Hello"]]);
    // The worker makes a token every 200 ms and stamps each as it writes it: the first one reached
    // the caller while the worker was still 800 ms away from its last (a buffering proxy would hand
    // everything over after the last). Token-by-token delivery: the gated test below.
    expect(tokens[0]!.at).toBeLessThan(tokens[4]!.emitted_at);
    for (let i = 1; i < 5; i++) expect(tokens[i]!.at).toBeGreaterThanOrEqual(tokens[i - 1]!.at);
    expect(await stream.rest()).toEqual([JSON.stringify({ type: "end", tokens_out: 5, decode_time_ms: 1, stop_reason: "EOS" }), "[DONE]"]);
  });

  test("gated tokens: the caller gets each one while the worker still holds the next; slots exact throughout", async () => {
    const h = await hive({ workerEnv: { FAKE_WORKER_TOKEN_GATE: "1", FAKE_WORKER_TOKENS: "3" } });
    const w = await idleWorker(h);
    expect({ slots_total: w.slots_total, slots_available: w.slots_available, in_flight: w.in_flight }).toEqual({ slots_total: 1, slots_available: 1, in_flight: 0 });
    const before = w.last_activity;
    const stream = events(await inference(h, w.id, { job_id: "gated" }));
    expect(JSON.parse((await stream.next())!.data).type).toBe("started");
    const busy = await record(h, w.id);
    expect({ state: busy.state, slots_available: busy.slots_available, in_flight: busy.in_flight }).toEqual({ state: "busy", slots_available: 0, in_flight: 1 });
    for (let i = 0; i < 3; i++) {
      await release(w); // the worker may make token i now, and not one more
      expect(JSON.parse((await stream.next())!.data)).toMatchObject({ type: "token", i });
    }
    await release(w);
    expect(await stream.rest()).toEqual([JSON.stringify({ type: "end", tokens_out: 3, decode_time_ms: 1, stop_reason: "EOS" }), "[DONE]"]);
    const after = await h.waitState(w.id, (x) => x.state === "idle", "idle again");
    expect({ slots_available: after.slots_available, in_flight: after.in_flight }).toEqual({ slots_available: 1, in_flight: 0 });
    expect(after.last_activity).not.toEqual(before);
    expect(await fakeStats(w)).toEqual({ inference_started: 1, inference_finished: 1, inference_cancelled: 0, in_flight: 0, max_in_flight: 1 });
  });

  test("a caller that disconnects cancels the worker's request, and its slot is free again", async () => {
    const h = await hive({ workerEnv: { FAKE_WORKER_TOKEN_GATE: "1" } });
    const w = await idleWorker(h);
    const ac = new AbortController();
    const stream = events(await inference(h, w.id, { job_id: "gone" }, { signal: ac.signal }));
    expect(JSON.parse((await stream.next())!.data).type).toBe("started");
    expect((await record(h, w.id)).state).toBe("busy");
    ac.abort();
    await waitFor(async () => (await fakeStats(w)).inference_cancelled === 1, { what: "the worker's request cancelled" });
    expect(await fakeStats(w)).toEqual({ inference_started: 1, inference_finished: 0, inference_cancelled: 1, in_flight: 0, max_in_flight: 1 });
    const idle = await h.waitState(w.id, (x) => x.state === "idle", "slot released");
    expect({ slots_available: idle.slots_available, in_flight: idle.in_flight }).toEqual({ slots_available: 1, in_flight: 0 });
  });

  test("a stream is never cut by the server's idle timeout while it lasts", async () => {
    // The hive's sockets time out after 1 s of silence here (Bun checks every 4 s, so a silent
    // connection is cut within 8 s); the worker stays silent for 8.5 s.
    const h = await hive({ workerEnv: { FAKE_WORKER_TOKEN_GATE: "1", FAKE_WORKER_TOKENS: "1" }, overrides: { idleTimeoutS: 1 } });
    const w = await idleWorker(h);
    const stream = events(await inference(h, w.id));
    expect(JSON.parse((await stream.next())!.data).type).toBe("started");
    await Bun.sleep(8500);
    await release(w);
    expect(JSON.parse((await stream.next())!.data)).toMatchObject({ type: "token", i: 0, t: "Hello" });
    expect((await stream.rest()).at(-1)).toBe("[DONE]");
  });

  test("404 for an unknown worker, 503 WORKER_NOT_READY while loading, 401 without the token", async () => {
    const h = await hive({ workerEnv: { FAKE_WORKER_NO_CALLBACK: "1" } });
    const unknown = await inference(h, "worker-nope");
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toEqual({ error: { code: "WORKER_NOT_FOUND", message: "no worker worker-nope is known to this hive" } });
    const { worker_id } = await h.spawn();
    await h.waitState(worker_id, (w) => w.phase === "starting", "starting");
    for (const res of [await inference(h, worker_id), await h.api(`/v1/workers/${worker_id}/proxy/v1/ready`)]) {
      expect(res.status).toBe(503);
      expect(await res.json()).toEqual({
        error: { code: "WORKER_NOT_READY", message: `worker ${worker_id} is not ready: it is starting`, details: { phase: "starting", state: "loading" } },
      });
    }
    const anonymous = await inference(h, worker_id, { job_id: "x" }, { auth: false } as RequestInit);
    expect(anonymous.status).toBe(401);
    expect(await anonymous.json()).toEqual({ error: { code: "MISSING_API_KEY", message: "Missing API key" } });
  });
});

describe("proxy to any path", () => {
  test("method, path, query, headers and a 5 MB body go through unchanged; hop-by-hop headers do not; the worker gets the hive's Bearer", async () => {
    const h = await hive();
    const w = await idleWorker(h);
    const body = randomBytes(5 * 1024 * 1024);
    const sha = createHash("sha256").update(body).digest("hex");
    const res = await h.api(`/v1/workers/${w.id}/proxy/fake/echo/a/b%20c?x=1&y=%2F`, {
      method: "PUT",
      body,
      headers: { "x-custom": "kept", "x-correlation-id": "corr-123", connection: "keep-alive, x-hop", "x-hop": "dropped", "content-type": "application/octet-stream" },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("x-correlation-id")).toBe("corr-123");
    const echo: any = await res.json();
    expect(echo).toMatchObject({ method: "PUT", path: "/a/b%20c", query: "?x=1&y=%2F", body_bytes: 5 * 1024 * 1024, body_sha256: sha });
    expect(echo.headers).toMatchObject({
      "x-custom": "kept",
      "x-correlation-id": "corr-123",
      "content-type": "application/octet-stream",
      "content-length": String(5 * 1024 * 1024),
      authorization: `Bearer ${TOKEN}`,
    });
    expect(echo.headers["x-hop"]).toBeUndefined();
    expect(echo.headers.host).toBe(`127.0.0.1:${w.port}`);

    // The same body chunked (no declared length): streamed through, counted, not buffered first.
    const chunks = [body.subarray(0, 1 << 20), body.subarray(1 << 20)];
    const streamed = new ReadableStream<Uint8Array>({
      pull(c) {
        const next = chunks.shift();
        if (next) c.enqueue(next);
        else c.close();
      },
    });
    const chunked = await h.api(`/v1/workers/${w.id}/proxy/fake/echo/up?chunked=1`, { method: "POST", body: streamed, duplex: "half" } as RequestInit);
    const chunkedEcho: any = await chunked.json();
    expect(chunkedEcho).toMatchObject({ method: "POST", path: "/up", query: "?chunked=1", body_bytes: 5 * 1024 * 1024, body_sha256: sha });
    expect(chunkedEcho.headers["transfer-encoding"]).toBe("chunked");

    for (const method of ["GET", "DELETE", "PATCH", "OPTIONS"]) {
      const r: any = await (await h.api(`/v1/workers/${w.id}/proxy/fake/echo/m`, { method })).json();
      expect({ method: r.method, body_bytes: r.body_bytes }).toEqual({ method, body_bytes: 0 });
    }
    const head = await h.api(`/v1/workers/${w.id}/proxy/fake/echo/m`, { method: "HEAD" });
    expect({ status: head.status, type: head.headers.get("content-type"), body: await head.text() }).toEqual({ status: 200, type: "application/json", body: "" });
    expect((await h.api(`/v1/workers/${w.id}/proxy/fake/echo/m`, { method: "TRACE" }).catch(() => null))?.status ?? 404).toBe(404);
    // The worker's own status and body come back as they are.
    const missing = await h.api(`/v1/workers/${w.id}/proxy/no/such/route`);
    expect(missing.status).toBe(404);
    expect(await missing.text()).toBe("");
    const ready = await h.api(`/v1/workers/${w.id}/proxy/v1/ready`);
    expect(await ready.json()).toEqual({ ready: true, state: "idle", model_loaded: true });
  });

  test("bodies over [workers] proxy_body_limit_mb get 413, declared or streamed; the global limit does not apply", async () => {
    const h = await hive({ config: { workers: { proxy_body_limit_mb: 2 } } });
    const w = await idleWorker(h);
    const limit = 2 * 1024 * 1024;
    // 1.5 MB is over server.body_limit_bytes (1 MiB) and within the route's own limit.
    const fits: any = await (await h.api(`/v1/workers/${w.id}/proxy/fake/echo/fits`, { method: "POST", body: new Uint8Array(1.5 * 1024 * 1024) })).json();
    expect(fits.body_bytes).toBe(1.5 * 1024 * 1024);

    const declared = await h.api(`/v1/workers/${w.id}/proxy/fake/echo/big`, { method: "POST", body: new Uint8Array(limit + 1) });
    expect(declared.status).toBe(413);
    expect(await declared.json()).toEqual({ error: { code: "PAYLOAD_TOO_LARGE", message: `request body is ${limit + 1} bytes; the limit is ${limit} bytes` } });

    let sent = 0;
    const endless = new ReadableStream<Uint8Array>({
      pull(c) {
        sent += 64 * 1024;
        c.enqueue(new Uint8Array(64 * 1024));
        if (sent > 4 * limit) c.close();
      },
    });
    const streamed = await h.api(`/v1/workers/${w.id}/proxy/fake/echo/big`, { method: "POST", body: endless, duplex: "half" } as RequestInit);
    expect(streamed.status).toBe(413);
    expect(await streamed.json()).toEqual({ error: { code: "PAYLOAD_TOO_LARGE", message: `request body is too large; the limit is ${limit} bytes` } });
    // The slot of a refused request is free again.
    const after = await h.waitState(w.id, (x) => x.in_flight === 0, "slot released");
    expect({ state: after.state, slots_available: after.slots_available }).toEqual({ state: "idle", slots_available: 1 });
  });
});

describe("slots, busy and the queue", () => {
  test("four slots: each request takes one, busy only when none is free; every change is one exact record", async () => {
    const h = await hive({
      workerEnv: { FAKE_WORKER_TOKEN_GATE: "1", FAKE_WORKER_TOKENS: "1" },
      config: { workers: { profiles: { "llm-worker-rbee": { slots: 4 } } } },
    });
    const w = await idleWorker(h);
    expect({ slots_total: w.slots_total, slots_available: w.slots_available }).toEqual({ slots_total: 4, slots_available: 4 });
    const seen: string[] = [];
    h.registry.onChange(({ worker }) => {
      if (worker.id !== w.id) return;
      const now = `${worker.state} ${worker.slots_available} ${worker.in_flight}`;
      if (seen.at(-1) !== now) seen.push(now);
    });
    const streams = [];
    for (let i = 0; i < 4; i++) {
      const s = events(await inference(h, w.id, { job_id: `j${i}` }));
      expect(JSON.parse((await s.next())!.data).type).toBe("started");
      streams.push(s);
    }
    expect(await fakeStats(w)).toMatchObject({ in_flight: 4, max_in_flight: 4 });
    await openGate(w);
    for (const s of streams) expect((await s.rest()).at(-1)).toBe("[DONE]");
    await h.waitState(w.id, (x) => x.in_flight === 0, "all done");
    expect(seen).toEqual(["idle 3 1", "idle 2 2", "idle 1 3", "busy 0 4", "idle 1 3", "idle 2 2", "idle 3 1", "idle 4 0"]);
  });

  test("one slot: a request waits in the queue, the next one past queue_max gets 429 with Retry-After, and the worker never serves two at once", async () => {
    const h = await hive({
      workerEnv: { FAKE_WORKER_TOKEN_GATE: "1", FAKE_WORKER_TOKENS: "1" },
      config: { workers: { queue_max: 1, queue_timeout_s: 30 } },
    });
    const w = await idleWorker(h);
    const first = events(await inference(h, w.id, { job_id: "first" }));
    expect(JSON.parse((await first.next())!.data).type).toBe("started");
    const second = inference(h, w.id, { job_id: "second" });
    await waitFor(() => h.activity.queued(w.id) === 1, { what: "second request queued" });
    expect(await fakeStats(w)).toMatchObject({ inference_started: 1 }); // it waits in the hive, not at the worker

    const third = await inference(h, w.id, { job_id: "third" });
    expect(third.status).toBe(429);
    // No request has finished yet: one request's time is taken as 1 s, and one waits ahead.
    expect(third.headers.get("retry-after")).toBe("2");
    expect(await third.json()).toEqual({
      error: {
        code: "WORKER_BUSY",
        message: `worker ${w.id} is busy: all 1 slots are taken and 1 requests wait already`,
        details: { retry_after_s: 2, slots_total: 1, queued: 1 },
      },
    });

    await openGate(w);
    expect((await first.rest()).at(-1)).toBe("[DONE]");
    const secondStream = events(await second);
    expect(JSON.parse((await secondStream.next())!.data)).toMatchObject({ type: "started", job_id: "second" });
    expect((await secondStream.rest()).at(-1)).toBe("[DONE]");
    expect(await fakeStats(w)).toEqual({ inference_started: 2, inference_finished: 2, inference_cancelled: 0, in_flight: 0, max_in_flight: 1 });
  });

  test("a queued request whose caller goes away leaves the queue and is never sent", async () => {
    const h = await hive({ workerEnv: { FAKE_WORKER_TOKEN_GATE: "1", FAKE_WORKER_TOKENS: "1" } });
    const w = await idleWorker(h);
    const first = events(await inference(h, w.id));
    expect(JSON.parse((await first.next())!.data).type).toBe("started");
    const ac = new AbortController();
    const waiting = inference(h, w.id, { job_id: "impatient" }, { signal: ac.signal }).catch(() => "aborted");
    await waitFor(() => h.activity.queued(w.id) === 1, { what: "queued" });
    ac.abort();
    expect(await waiting).toBe("aborted");
    await waitFor(() => h.activity.queued(w.id) === 0, { what: "left the queue" });
    await openGate(w);
    expect((await first.rest()).at(-1)).toBe("[DONE]");
    expect(await fakeStats(w)).toMatchObject({ inference_started: 1, inference_finished: 1 });
    expect(h.logs.filter((l) => l.includes('"level":"error"'))).toEqual([]);
  });

  test("a queued request waits at most queue_timeout_s, then gets 429", async () => {
    const h = await hive({ workerEnv: { FAKE_WORKER_TOKEN_GATE: "1" }, config: { workers: { queue_timeout_s: 0.2 } } });
    const w = await idleWorker(h);
    const first = events(await inference(h, w.id));
    expect(JSON.parse((await first.next())!.data).type).toBe("started");
    const late = await inference(h, w.id, { job_id: "late" });
    expect(late.status).toBe(429);
    expect(late.headers.get("retry-after")).toBe("1");
    expect(((await late.json()) as any).error).toMatchObject({ code: "WORKER_BUSY", message: `worker ${w.id} is busy: no slot freed within 0.2 s` });
    expect(h.activity.queued(w.id)).toBe(0);
    expect(await fakeStats(w)).toMatchObject({ inference_started: 1 });
  });
});

describe("slots from the worker", () => {
  test('slots = "props": total_slots from its GET /props once loaded; a worker that does not say counts one slot', async () => {
    const llamaFake = { args: ["--model", "{model_path}", "--port", "{port}"], readiness: "http" as const, healthy_status: ["ok"], slots: "props" as const };
    const h = await hive({
      config: {
        workers: {
          profiles: {
            "llama-fake": { ...llamaFake, env: { FAKE_WORKER_MODE: "llama-server", FAKE_WORKER_SLOTS: "3", FAKE_WORKER_LOAD_MS: "100" } },
            "no-props": { slots: "props" },
          },
        },
      },
    });
    const { worker_id } = await h.spawn({ profile: "llama-fake" });
    const w = await h.waitState(worker_id, (x) => x.state === "idle", "idle");
    expect({ slots_total: w.slots_total, slots_available: w.slots_available, in_flight: w.in_flight }).toEqual({ slots_total: 3, slots_available: 3, in_flight: 0 });

    const other = await idleWorker(h, { profile: "no-props" });
    expect({ slots_total: other.slots_total, slots_available: other.slots_available }).toEqual({ slots_total: 1, slots_available: 1 });
    const line = h.logs.find((l) => l.includes("could not read the worker's slots; counting one") && l.includes(other.id));
    expect(JSON.parse(line!)).toMatchObject({ level: "warn", worker_id: other.id, why: "GET /props answered 404 without a total_slots of 1 or more" });
  });
});

describe("activity reported by others", () => {
  test("in_flight counts against the slots until reported back; an empty body touches last_activity; unknown worker 404", async () => {
    const h = await hive({ workerEnv: { FAKE_WORKER_TOKENS: "1" } });
    const w = await idleWorker(h);
    const report = (body?: unknown) =>
      h.api(`/v1/workers/${w.id}/activity`, body === undefined ? { method: "POST" } : { json: body });

    const busy: any = await (await report({ in_flight: 1 })).json();
    expect({ state: busy.state, slots_available: busy.slots_available, in_flight: busy.in_flight }).toEqual({ state: "busy", slots_available: 0, in_flight: 1 });
    // A request through the hive now waits for the reported one to end.
    const queued = inference(h, w.id, { job_id: "after-report" });
    await waitFor(() => h.activity.queued(w.id) === 1, { what: "queued behind the reported request" });
    const idle: any = await (await report({ in_flight: 0 })).json();
    expect(idle.in_flight === 0 || idle.in_flight === 1).toBe(true); // the queued request may have its slot already
    expect((await events(await queued).rest()).at(-1)).toBe("[DONE]");
    const done = await h.waitState(w.id, (x) => x.in_flight === 0, "done");
    expect({ state: done.state, slots_available: done.slots_available }).toEqual({ state: "idle", slots_available: 1 });

    const touched: any = await (await report()).json();
    expect(touched.last_activity).not.toEqual(done.last_activity);
    expect({ state: touched.state, in_flight: touched.in_flight }).toEqual({ state: "idle", in_flight: 0 });

    const bad = await h.api(`/v1/workers/${w.id}/activity`, { json: { in_flight: -1 } });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as any).error.code).toBe("INVALID_INPUT");
    const unknown = await h.api(`/v1/workers/worker-nope/activity`, { json: { in_flight: 1 } });
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toEqual({ error: { code: "WORKER_NOT_FOUND", message: "no worker worker-nope is known to this hive" } });
  });
});

describe("drain on stop and restart", () => {
  const kinds = (rest: string[]) => rest.map((d) => (d === "[DONE]" ? d : JSON.parse(d).type));

  test("stop waits for the request in flight (new ones get 503 meanwhile); ?drain=false and drain:false do not", async () => {
    const h = await hive({ workerEnv: { FAKE_WORKER_TOKEN_GATE: "1", FAKE_WORKER_TOKENS: "2" } });
    const w = await idleWorker(h);
    const inFlight = events(await inference(h, w.id, { job_id: "drained" }));
    expect(JSON.parse((await inFlight.next())!.data).type).toBe("started");
    let answered = false;
    const stop = h.api(`/v1/workers/${w.id}`, { method: "DELETE" }).then((r) => ((answered = true), r));
    await h.waitState(w.id, (x) => x.phase === "stopping", "stopping");
    const refused = await inference(h, w.id, { job_id: "too-late" });
    expect(refused.status).toBe(503);
    expect(((await refused.json()) as any).error).toMatchObject({ code: "WORKER_NOT_READY", message: `worker ${w.id} is not ready: it is stopping` });
    // The worker still runs and still streams to the request being drained.
    await release(w);
    expect(JSON.parse((await inFlight.next())!.data)).toMatchObject({ type: "token", i: 0 });
    expect(answered).toBe(false);
    await release(w);
    expect(kinds(await inFlight.rest())).toEqual(["token", "end", "[DONE]"]);
    const final: any = await (await stop).json();
    expect({ phase: final.phase, reason: final.last_exit.reason, code: final.last_exit.code }).toEqual({ phase: "exited", reason: "stopped", code: 0 });

    for (const how of ["query", "body"] as const) {
      const other = await idleWorker(h);
      const cut = events(await inference(h, other.id));
      expect(JSON.parse((await cut.next())!.data).type).toBe("started");
      const res =
        how === "query"
          ? await h.api(`/v1/workers/${other.id}?drain=false`, { method: "DELETE" })
          : await h.api("/v1/workers/stop", { json: { worker_id: other.id, drain: false } });
      expect(res.status).toBe(200);
      const gone: any = await res.json();
      expect((how === "query" ? gone : gone.worker).last_exit.reason).toBe("stopped");
      const rest = await cut.rest().catch(() => ["(connection reset)"]);
      expect(rest).not.toContain("[DONE]");
    }
  });

  test("drain_timeout_s bounds the wait", async () => {
    const h = await hive({ workerEnv: { FAKE_WORKER_TOKEN_GATE: "1" }, config: { workers: { drain_timeout_s: 0.3 } } });
    const w = await idleWorker(h);
    const held = events(await inference(h, w.id));
    expect(JSON.parse((await held.next())!.data).type).toBe("started");
    const res = await h.api("/v1/workers/stop", { json: { worker_id: w.id } });
    expect(res.status).toBe(200);
    expect(((await res.json()) as any).worker.last_exit.reason).toBe("stopped");
    expect(h.logs.some((l) => l.includes("drain timeout: stopping the worker with requests in flight") && l.includes(`"in_flight":1`))).toBe(true);
    expect(await held.rest().catch(() => ["(connection reset)"])).not.toContain("[DONE]");
  });

  test("restart waits for the request in flight, then the worker comes back; ?drain=false restarts at once", async () => {
    const h = await hive({ workerEnv: { FAKE_WORKER_TOKEN_GATE: "1", FAKE_WORKER_TOKENS: "1" } });
    const w = await idleWorker(h);
    const inFlight = events(await inference(h, w.id));
    expect(JSON.parse((await inFlight.next())!.data).type).toBe("started");
    const restart = h.api(`/v1/workers/${w.id}/restart`, { method: "POST" });
    const draining = await h.waitState(w.id, (x) => x.phase === "restarting", "draining before the restart");
    expect({ state: draining.state, pid: draining.pid }).toEqual({ state: "busy", pid: w.pid });
    expect((await inference(h, w.id)).status).toBe(503);
    await release(w);
    expect(kinds(await inFlight.rest())).toEqual(["token", "end", "[DONE]"]);
    expect((await restart).status).toBe(200);
    const back = await h.waitState(w.id, (x) => x.state === "idle" && x.restart_count === 1, "back idle");
    expect(back.pid).not.toBe(w.pid);
    expect(back.exits.map((e: any) => e.message)).toEqual(["restarted on request"]);

    const cut = events(await inference(h, w.id));
    expect(JSON.parse((await cut.next())!.data).type).toBe("started");
    expect((await h.api(`/v1/workers/${w.id}/restart?drain=false`, { method: "POST" })).status).toBe(200);
    expect(await cut.rest().catch(() => ["(connection reset)"])).not.toContain("[DONE]");
    await h.waitState(w.id, (x) => x.state === "idle" && x.restart_count === 2, "back again");
  });
});
