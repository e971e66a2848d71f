/**
 * What the hive sends queen-rbee (QUEEN_CALLBACK_URL): the ready forward with Bearer, and the
 * heartbeat at the configured interval with the contract payload, also while a model download
 * runs, backing off while queen fails.
 */
import { afterEach, expect, test } from "bun:test";
import { FakeHub } from "./fixtures/fake-hub.ts";
import { startTestHive, waitFor, type TestHive } from "./helpers.ts";

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface QueenCall {
  at: number;
  path: string;
  authorization: string | null;
  correlationId: string | null;
  body: any;
}

/** A stand-in for queen-rbee: records every call; `status` decides its answers. */
function fakeQueen() {
  const calls: QueenCall[] = [];
  const state = { status: 200 };
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      calls.push({
        at: performance.now(),
        path: new URL(req.url).pathname,
        authorization: req.headers.get("authorization"),
        correlationId: req.headers.get("x-correlation-id"),
        body: await req.json(),
      });
      return Response.json({ ok: state.status === 200 }, { status: state.status });
    },
  });
  cleanups.push(() => server.stop(true));
  return { url: `http://127.0.0.1:${server.port}`, calls, state, beats: () => calls.filter((c) => c.path === "/v1/heartbeat") };
}

const TOKEN = "queen-token-0123456789abcdef";
const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
/** A record's `{secs_since_epoch, nanos_since_epoch}` as RFC 3339 (ms precision). */
const rfc3339Of = (t: { secs_since_epoch: number; nanos_since_epoch: number }) => new Date(t.secs_since_epoch * 1000 + Math.floor(t.nanos_since_epoch / 1e6)).toISOString();
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function hive(queenUrl: string, opts: Parameters<typeof startTestHive>[0] = {}): Promise<TestHive> {
  const h = await startTestHive({ token: TOKEN, ...opts, env: { QUEEN_CALLBACK_URL: queenUrl, RBEE_HIVE_ID: "hive-test-1", ...opts.env } });
  cleanups.push(() => h.close());
  return h;
}

test("a ready worker is forwarded to queen-rbee with Bearer and the upstream body", async () => {
  const queen = fakeQueen();
  const h = await hive(queen.url, { config: { queen: { heartbeat_interval_s: 3600 } } });
  const { worker_id, url } = await h.spawn();
  await h.waitState(worker_id, (w) => w.state === "idle", "idle");
  const forward = await waitFor(() => queen.calls.find((c) => c.path === "/v2/workers/ready"), { what: "ready forward" });
  expect(forward.authorization).toBe(`Bearer ${TOKEN}`);
  expect(forward.body).toEqual({ worker_id, url, model_ref: h.modelRef, backend: "cpu" });
  expect(forward.correlationId).toMatch(/^[0-9a-f-]{36}$/);
});

test("heartbeats reach queen-rbee at the configured interval with the contract payload while a download runs", async () => {
  const queen = fakeQueen();
  const hub = await FakeHub.start({ ggufHeaders: true });
  cleanups.push(() => hub.stop());
  const SIZE = 64 * 1024 * 1024;
  hub.addRepo({ id: "org/big-GGUF", files: [{ path: "big.Q4_K_M.gguf", size: SIZE, seed: 5 }] });
  // Half the file at full speed, then held until the test has seen its heartbeats.
  hub.addFault({ kind: "stall", atByte: SIZE / 2, ms: 60_000, on: "cdn" });
  const INTERVAL_S = 0.25;
  const h = await hive(queen.url, { env: { HF_ENDPOINT: hub.url }, config: { queen: { heartbeat_interval_s: INTERVAL_S }, downloads: { disk_margin_mb: 0 } } });
  const { worker_id, url } = await h.spawn({ keep_alive_s: 0 });
  const w = await h.waitState(worker_id, (x) => x.state === "idle", "idle");

  const started: any = await (await h.api("/v1/models/download", { json: { model_ref: "hf:org/big-GGUF" } })).json();
  const running = async () => ((await (await h.api("/v1/models/downloads")).json()) as any).downloads.find((d: any) => d.id === started.download_id)?.state;
  await waitFor(async () => (await running()) === "downloading", { what: "download running" });
  const from = queen.beats().length;
  await waitFor(() => queen.beats().length >= from + 6, { what: "6 heartbeats during the download", timeoutMs: 10_000 });
  expect(await running()).toBe("downloading");
  hub.releaseStalls();

  const beats = queen.beats().slice(from);
  for (const beat of beats) {
    expect(beat.authorization).toBe(`Bearer ${TOKEN}`);
    expect(beat.body.hive_id).toBe("hive-test-1");
    expect(beat.body.timestamp).toMatch(RFC3339);
    expect(beat.body.workers).toEqual([
      {
        worker_id,
        state: "idle",
        last_heartbeat: rfc3339Of(w.last_heartbeat ?? w.ready_at),
        health_status: w.health_status ?? "healthy",
        url,
        model_id: h.modelRef,
        backend: "cpu",
        device_id: 0,
        ram_bytes: w.memory_used_bytes ?? w.memory_estimate_bytes,
      },
    ]);
  }
  const gaps = beats.slice(1).map((b, i) => (b.at - beats[i]!.at) / 1000);
  // Fixed-rate schedule: never early; the median gap is the interval (generous upper bound: a hang guard).
  expect(Math.min(...gaps)).toBeGreaterThan(INTERVAL_S * 0.5);
  expect(median(gaps)).toBeGreaterThan(INTERVAL_S * 0.8);
  expect(median(gaps)).toBeLessThan(INTERVAL_S * 2);
  const metrics = await (await h.api("/metrics", { auth: false })).text();
  expect(Number(/^rbee_hive_queen_heartbeats_total\{outcome="ok"\} (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(beats.length);
});

test("while queen-rbee fails the heartbeat backs off (doubling), and returns to the interval when it answers again", async () => {
  const queen = fakeQueen();
  queen.state.status = 503;
  const INTERVAL_S = 0.05;
  const h = await hive(queen.url, { config: { queen: { heartbeat_interval_s: INTERVAL_S } } });
  await waitFor(() => queen.beats().length >= 4, { what: "4 failed heartbeats", timeoutMs: 10_000 });
  const failing = queen.beats().slice(0, 4);
  const gaps = failing.slice(1).map((b, i) => (b.at - failing[i]!.at) / 1000);
  // After n failures the next beat waits interval · 2^n: 0.1, 0.2, 0.4 s.
  gaps.forEach((gap, i) => expect(gap).toBeGreaterThan(INTERVAL_S * 2 ** (i + 1) * 0.75));
  queen.state.status = 200;
  const recoveredFrom = queen.beats().length;
  await waitFor(() => queen.beats().length >= recoveredFrom + 3, { what: "heartbeats after recovery", timeoutMs: 10_000 });
  expect(h.logs.map((l) => JSON.parse(l).msg)).toContain("queen heartbeat recovered");
  const warned = h.logs.map((l) => JSON.parse(l)).filter((l) => l.msg === "queen heartbeat failed; backing off").map((l) => l.failures);
  expect(warned.slice(0, 3)).toEqual([1, 2, 4]); // one line per doubling, not one per beat
});
