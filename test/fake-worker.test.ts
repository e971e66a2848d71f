/**
 * The fake worker must speak upstream llm-worker-rbee's protocol (protocol.md §2–3) exactly, since
 * every hive test relies on it. Started directly with Bun.spawn; a tiny Bun.serve receives callbacks.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";

const FAKE = join(import.meta.dir, "fixtures", "fake-worker.ts");

interface Received {
  method: string;
  path: string;
  headers: Headers;
  body: string;
}

interface Receiver {
  readonly port: number;
  readonly url: string;
  readonly requests: Received[];
  status: number;
  /** Runs before each answer: the worker waits for it. */
  onRequest?: (r: Received) => Promise<void> | void;
}

type Proc = Bun.Subprocess<"ignore", "pipe", "pipe">;
interface Started {
  proc: Proc;
  stdout: Promise<string>;
  stderr: Promise<string>;
}

const procs: Proc[] = [];
const servers: Array<ReturnType<typeof Bun.serve>> = [];

afterEach(async () => {
  for (const p of procs.splice(0)) {
    try {
      process.kill(-p.pid, "SIGKILL"); // whole group
    } catch {
      /* already gone */
    }
    await p.exited;
  }
  for (const s of servers.splice(0)) await s.stop(true);
});

function receiver(status = 200): Receiver {
  const r: Receiver = { port: 0, url: "", requests: [], status };
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch: async (req) => {
      const received = { method: req.method, path: new URL(req.url).pathname, headers: req.headers, body: await req.text() };
      r.requests.push(received);
      await r.onRequest?.(received);
      return Response.json({ message: "ok" }, { status: r.status });
    },
  });
  servers.push(server);
  Object.assign(r, { port: server.port, url: `http://127.0.0.1:${server.port}` });
  return r;
}

/** A port that was free a moment ago. */
function freePort(): number {
  const l = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = l.port;
  l.stop(true);
  return port;
}

function start(args: string[], env: Record<string, string> = {}): Started {
  const proc = Bun.spawn([FAKE, ...args], {
    env: { ...process.env, ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    detached: true,
  });
  procs.push(proc);
  return { proc, stdout: new Response(proc.stdout).text(), stderr: new Response(proc.stderr).text() };
}

function llmArgs(port: number, callbackUrl: string, omit?: string): string[] {
  const flags: Record<string, string> = {
    "--worker-id": "worker-1234",
    "--model": "/models/tiny.gguf",
    "--model-ref": "hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF",
    "--backend": "cpu",
    "--device": "0",
    "--port": String(port),
    "--callback-url": callbackUrl,
  };
  return Object.entries(flags).flatMap(([k, v]) => (k === omit ? [] : [k, v]));
}

async function waitFor(cond: () => boolean, timeoutMs = 3000, what = "condition"): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!cond()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(5);
  }
}

/** Polls until the port accepts HTTP on `path`; returns that first response. */
async function waitListening(port: number, path = "/health", timeoutMs = 3000): Promise<Response> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    try {
      return await fetch(`http://127.0.0.1:${port}${path}`);
    } catch (e) {
      if (performance.now() > deadline) throw e;
      await Bun.sleep(5);
    }
  }
}

/** `data:` payloads of an SSE body. */
const sseData = (text: string) =>
  text
    .split("\n\n")
    .filter((b) => b.startsWith("data: "))
    .map((b) => b.slice("data: ".length));

describe("llm-worker-rbee mode", () => {
  test("callback body, buggy heartbeat path, /health, no auth headers, SIGTERM exit 0", async () => {
    const hive = receiver();
    const port = freePort();
    const w = start(llmArgs(port, `${hive.url}/v1/workers/ready`), { FAKE_WORKER_HEARTBEAT_MS: "20" });

    const health = await waitListening(port);
    expect(health.status).toBe(200);
    expect(await health.json()).toEqual({ status: "healthy", vram_bytes: 0 });

    // The callback came first, before the server listened.
    const cb = hive.requests[0];
    expect(cb?.method).toBe("POST");
    expect(cb?.path).toBe("/v1/workers/ready");
    expect(cb?.headers.get("authorization")).toBeNull();
    expect(cb?.headers.get("content-type")).toBe("application/json");
    expect(JSON.parse(cb?.body ?? "")).toEqual({
      worker_id: "worker-1234",
      url: `http://localhost:${port}`,
      model_ref: "hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF",
      backend: "cpu",
      device: 0,
    });

    await waitFor(() => hive.requests.length >= 3, 2000, "two heartbeats");
    for (const hb of hive.requests.slice(1)) {
      expect(hb.method).toBe("POST");
      expect(hb.path).toBe("/v1/workers/ready/v1/heartbeat");
      expect(hb.headers.get("authorization")).toBeNull();
      const body = JSON.parse(hb.body) as { worker_id: string; timestamp: string; health_status: string };
      expect(Object.keys(body).sort()).toEqual(["health_status", "timestamp", "worker_id"]);
      expect(body.worker_id).toBe("worker-1234");
      expect(body.health_status).toBe("healthy");
      expect(body.timestamp).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/);
      expect(Math.abs(Date.parse(body.timestamp) - Date.now())).toBeLessThan(60_000);
    }

    // Routes the upstream worker does not have.
    for (const path of ["/v1/health", "/v1/shutdown", "/v1/admin/shutdown"]) {
      expect((await fetch(`http://127.0.0.1:${port}${path}`)).status).toBe(404);
    }

    w.proc.kill("SIGTERM");
    expect(await w.proc.exited).toBe(0);
    expect(await w.stdout).toContain("received SIGTERM");
  });

  test("Bearer routes with LLORCH_API_TOKEN: ready, inference SSE, loading progress", async () => {
    const hive = receiver();
    const port = freePort();
    const token = "0123456789abcdef-token";
    start(llmArgs(port, `${hive.url}/v1/workers/ready`), { LLORCH_API_TOKEN: token });
    const base = `http://127.0.0.1:${port}`;
    expect((await waitListening(port)).status).toBe(200); // /health stays public
    const auth = { authorization: `Bearer ${token}` };

    const missing = await fetch(`${base}/v1/ready`);
    expect(missing.status).toBe(401);
    expect(await missing.json()).toEqual({ error: { code: "MISSING_API_KEY", message: "Missing API key" } });
    const wrong = await fetch(`${base}/v1/ready`, { headers: { authorization: "Bearer nope" } });
    expect(wrong.status).toBe(401);
    expect(await wrong.json()).toEqual({ error: { code: "INVALID_API_KEY", message: "Invalid or missing API key" } });
    const lower = await fetch(`${base}/v1/ready`, { headers: { authorization: `bearer ${token}` } });
    expect(lower.status).toBe(401); // prefix is case-sensitive

    const ready = await fetch(`${base}/v1/ready`, { headers: auth });
    expect(await ready.json()).toEqual({ ready: true, state: "idle", model_loaded: true });

    const inf = await fetch(`${base}/v1/inference`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ job_id: "job-1", prompt: "hi", max_tokens: 2, temperature: 0, stream: true }),
    });
    expect(inf.headers.get("content-type")).toContain("text/event-stream");
    const events = sseData(await inf.text());
    expect(events.at(-1)).toBe("[DONE]");
    const parsed = events.slice(0, -1).map((e) => JSON.parse(e) as Record<string, unknown>);
    expect(parsed.map((e) => e.type)).toEqual(["started", "token", "token", "end"]);
    expect(parsed[0]).toMatchObject({ job_id: "job-1" });
    expect(parsed[1]).toEqual({ type: "token", t: "Hello", i: 0 });
    expect(parsed[3]).toEqual({ type: "end", tokens_out: 2, decode_time_ms: 1, stop_reason: "MAX_TOKENS" });

    const prog = await fetch(`${base}/v1/loading/progress`, { headers: auth });
    expect(sseData(await prog.text())).toEqual(['{"stage":"ready"}', "[DONE]"]);
  });

  test("non-2xx callback answer → exit 1, never listens", async () => {
    const hive = receiver(404);
    const port = freePort();
    const w = start(llmArgs(port, `${hive.url}/v1/workers/ready`));
    expect(await w.proc.exited).toBe(1);
    expect(await w.stderr).toContain("404");
    expect(hive.requests).toHaveLength(1);
    await expect(fetch(`http://127.0.0.1:${port}/health`)).rejects.toThrow();
  });

  test("missing flag → usage on stderr, exit 2", async () => {
    const w = start(llmArgs(1, "http://127.0.0.1:1/v1/workers/ready", "--callback-url"));
    expect(await w.proc.exited).toBe(2);
    const err = await w.stderr;
    expect(err).toContain("--callback-url");
    expect(err).toContain("Usage: llm-worker-rbee");
  });

  test("FAIL_LOAD → stderr lines, exit 3, no callback", async () => {
    const hive = receiver();
    const w = start(llmArgs(freePort(), `${hive.url}/v1/workers/ready`), { FAKE_WORKER_FAIL_LOAD: "1" });
    expect(await w.proc.exited).toBe(3);
    expect(await w.stderr).toContain("error: failed to load model");
    expect(hive.requests).toHaveLength(0);
  });

  test("LOAD_MS with LOAD_OUTPUT_MS prints progress lines while loading", async () => {
    const hive = receiver();
    const t0 = performance.now();
    const w = start(llmArgs(freePort(), `${hive.url}/v1/workers/ready`), {
      FAKE_WORKER_LOAD_MS: "120",
      FAKE_WORKER_LOAD_OUTPUT_MS: "20",
    });
    await waitFor(() => hive.requests.length >= 1, 3000, "callback");
    expect(performance.now() - t0).toBeGreaterThanOrEqual(120);
    w.proc.kill("SIGTERM");
    expect(await w.proc.exited).toBe(0);
    const progress = (await w.stdout).split("\n").filter((l) => /loading layers \d+\/32$/.test(l));
    expect(progress.length).toBeGreaterThanOrEqual(3);
  });

  test("SERVE_DELAY_MS: callback first, listening only later (upstream's race)", async () => {
    const hive = receiver();
    const port = freePort();
    let refusedDuringCallback: boolean | undefined;
    let answeredAt = 0;
    // While the callback is being answered the worker is waiting for us: it cannot listen yet.
    hive.onRequest = async (r) => {
      if (r.path !== "/v1/workers/ready") return;
      refusedDuringCallback = await fetch(`http://127.0.0.1:${port}/health`).then(
        () => false,
        () => true,
      );
      answeredAt = performance.now();
    };
    start(llmArgs(port, `${hive.url}/v1/workers/ready`), { FAKE_WORKER_SERVE_DELAY_MS: "150" });
    expect((await waitListening(port)).status).toBe(200);
    expect(refusedDuringCallback).toBe(true);
    expect(performance.now() - answeredAt).toBeGreaterThanOrEqual(150); // and it waited the delay after it
  });

  test("CRASH_AFTER_MS → stderr lines and exit 1 after listening", async () => {
    const hive = receiver();
    const port = freePort();
    const w = start(llmArgs(port, `${hive.url}/v1/workers/ready`), { FAKE_WORKER_CRASH_AFTER_MS: "100" });
    expect((await waitListening(port)).status).toBe(200);
    expect(await w.proc.exited).toBe(1);
    expect(await w.stderr).toContain("panicked");
  });

  test("UNHEALTHY_AFTER_MS, HEALTH_HANG_AFTER_MS, HEALTH_DELAY_MS", async () => {
    const hive = receiver();
    const p1 = freePort();
    start(llmArgs(p1, `${hive.url}/v1/workers/ready`), { FAKE_WORKER_UNHEALTHY_AFTER_MS: "80" });
    const listenedAt = performance.now();
    expect((await waitListening(p1)).status).toBe(200);
    let sick = await fetch(`http://127.0.0.1:${p1}/health`);
    while (sick.status === 200) sick = await fetch(`http://127.0.0.1:${p1}/health`);
    expect(performance.now() - listenedAt).toBeGreaterThanOrEqual(80);
    expect(sick.status).toBe(500);
    expect(await sick.json()).toEqual({ status: "unhealthy", vram_bytes: 0 });

    const p2 = freePort();
    start(llmArgs(p2, `${hive.url}/v1/workers/ready`), { FAKE_WORKER_HEALTH_HANG_AFTER_MS: "50" });
    expect((await waitListening(p2)).status).toBe(200);
    // Answers until 50 ms after listening, then never again: poll until one does not answer.
    const answers = async (ms: number) =>
      fetch(`http://127.0.0.1:${p2}/health`, { signal: AbortSignal.timeout(ms) }).then(
        () => true,
        (e: Error) => (e.name === "TimeoutError" ? false : Promise.reject(e)),
      );
    while (await answers(200)) await Bun.sleep(5);
    expect(await answers(500)).toBe(false); // and it stays hung

    const p3 = freePort();
    start(llmArgs(p3, `${hive.url}/v1/workers/ready`), { FAKE_WORKER_HEALTH_DELAY_MS: "100" });
    await waitListening(p3);
    const t0 = performance.now();
    expect((await fetch(`http://127.0.0.1:${p3}/health`)).status).toBe(200);
    expect(performance.now() - t0).toBeGreaterThanOrEqual(90);
  });

  test("STOP_HEARTBEAT_AFTER_MS stops the heartbeats", async () => {
    const hive = receiver();
    // Beats every 10 ms, stops after 40 ms; the worker then lives on for 300 ms of its own time
    // (CRASH_AFTER_MS) in which a broken stop would have sent about 30 more.
    const w = start(llmArgs(freePort(), `${hive.url}/v1/workers/ready`), {
      FAKE_WORKER_HEARTBEAT_MS: "10",
      FAKE_WORKER_STOP_HEARTBEAT_AFTER_MS: "40",
      FAKE_WORKER_CRASH_AFTER_MS: "300",
    });
    expect(await w.proc.exited).toBe(1);
    expect(await w.stdout).toMatch(/INFO heartbeats stopped \(FAKE_WORKER_STOP_HEARTBEAT_AFTER_MS\)\n/);
    const sentAt = hive.requests.filter((r) => r.path.endsWith("/v1/heartbeat")).map((r) => Date.parse(JSON.parse(r.body).timestamp));
    expect(sentAt.length).toBeGreaterThanOrEqual(2);
    // Every beat was sent (by the worker's own clock) within the 40 ms after the first one (+1 ms rounding).
    expect(sentAt.filter((t) => t - sentAt[0]! > 41)).toEqual([]);
  });
});

describe("llama-server mode", () => {
  test("listens at once, /health 503 while loading, then 200 {status:ok}", async () => {
    const port = freePort();
    const t0 = performance.now();
    start(["--model", "/models/x.gguf", "--port", String(port), "--host", "127.0.0.1", "--ctx-size", "4096", "--flash-attn"], {
      FAKE_WORKER_MODE: "llama-server",
      FAKE_WORKER_LOAD_MS: "200",
    });
    const first = await waitListening(port);
    expect(first.status).toBe(503);
    expect(await first.json()).toEqual({ error: { code: 503, message: "Loading model", type: "unavailable_error" } });
    let res = first;
    while (res.status === 503) {
      await Bun.sleep(10);
      res = await fetch(`http://127.0.0.1:${port}/health`);
    }
    expect(performance.now() - t0).toBeGreaterThanOrEqual(200);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: "ok" });
  });

  test("missing --port → exit 2", async () => {
    const w = start(["--model", "/m.gguf"], { FAKE_WORKER_MODE: "llama-server" });
    expect(await w.proc.exited).toBe(2);
  });
});
