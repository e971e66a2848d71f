/**
 * The REAL llama.cpp `llama-server` (../shared/realworker) under the README's example profile,
 * exactly as the README writes it (only the binary path points at the test binary): it becomes
 * idle with its slots read from `GET /props`, a streamed OpenAI `/v1/chat/completions` through the
 * hive's proxy gives the same chunks as the server directly, the inference route reaches its
 * `/completion`, a SIGKILL brings it back, a stop is recorded as `stopped`.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { pidAlive, ROOT, startTestHive, type TestHive } from "./helpers.ts";

const REALWORKER = join(ROOT, "../shared/realworker");
const LLAMA_SERVER = join(REALWORKER, "llama-server");
const MODEL_REF = `file:${join(REALWORKER, "tiny-random.Q8_0.gguf")}`;
const present = existsSync(LLAMA_SERVER);
if (!present) console.log(`realworker proxy tests skipped: no llama-server binary at ${LLAMA_SERVER}`);

/** The `[workers.profiles.llama-server]` block of the README, as written. */
function readmeProfile(): Record<string, unknown> {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const block = /```toml\n(\[workers\.profiles\.llama-server\][\s\S]*?)```/.exec(readme)?.[1];
  if (!block) throw new Error("README: no [workers.profiles.llama-server] example");
  const parsed = Bun.TOML.parse(block) as { workers: { profiles: Record<string, Record<string, unknown>> } };
  return parsed.workers.profiles["llama-server"]!;
}

const hives: TestHive[] = [];
afterEach(async () => {
  await Promise.all(hives.splice(0).map((h) => h.close()));
});

async function llamaHive(profile: Record<string, unknown>) {
  const h = await startTestHive({
    config: {
      workers: { profiles: { "llama-server": { ...profile, binary: LLAMA_SERVER } } },
      paths: { allowed_model_roots: [REALWORKER] },
      restart: { enabled: true, base_backoff_s: 0, jitter: 0 },
    },
  });
  hives.push(h);
  return h;
}

const spawnIdle = async (h: TestHive) => {
  const { worker_id } = await h.spawn({ model_ref: MODEL_REF, profile: "llama-server" });
  return h.waitState(worker_id, (w) => w.state === "idle" || w.phase === "crash_loop", "idle", 15_000);
};

/** The `data:` payloads of an SSE answer. */
async function sseData(res: Response): Promise<string[]> {
  const text = await res.text();
  return text.split("\n\n").filter((e) => e.startsWith("data: ")).map((e) => e.slice(6));
}

/** A chat completion chunk without what differs per request (its id, its time, its timings). */
function comparable(data: string): unknown {
  if (data === "[DONE]") return data;
  const { id: _id, created: _created, timings: _timings, ...rest } = JSON.parse(data);
  return rest;
}

const CHAT = { messages: [{ role: "user", content: "Tell me a story" }], max_tokens: 24, stream: true, temperature: 0, seed: 7 };

describe.skipIf(!present)("real llama-server under the README's profile", () => {
  test("spawn → idle with total_slots from GET /props; a streamed chat completion through the proxy equals the direct one; /completion through the inference route", async () => {
    const h = await llamaHive(readmeProfile());
    const w = await spawnIdle(h);
    expect({ state: w.state, phase: w.phase, slots_total: w.slots_total, slots_available: w.slots_available, in_flight: w.in_flight }).toEqual({
      state: "idle", phase: "running", slots_total: 1, slots_available: 1, in_flight: 0,
    });

    const direct = await fetch(`${w.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(CHAT) });
    const proxied = await h.api(`/v1/workers/${w.id}/proxy/v1/chat/completions`, { json: CHAT });
    expect(proxied.status).toBe(200);
    expect(proxied.headers.get("content-type")).toBe(direct.headers.get("content-type"));
    expect(proxied.headers.get("x-correlation-id")).toMatch(/^[0-9a-f-]{36}$/);
    const [a, b] = [await sseData(direct), await sseData(proxied)];
    // One chunk per token (24, the random model never stops early), the final one, [DONE].
    expect(a).toHaveLength(26);
    expect(b.map(comparable)).toEqual(a.map(comparable));
    expect(JSON.parse(b[0]!).choices[0].delta.content.length).toBeGreaterThan(0);

    const completion = await h.api(`/v1/workers/${w.id}/inference`, { json: { prompt: "Once upon a time", n_predict: 8, stream: true } });
    expect(completion.status).toBe(200);
    const events = (await sseData(completion)).map((d) => JSON.parse(d));
    expect(events).toHaveLength(9);
    expect(events.at(-1)).toMatchObject({ stop: true, tokens_predicted: 8 });

    const after = await h.waitState(w.id, (x) => x.in_flight === 0 && x.state === "idle", "idle after the requests");
    expect(after.last_activity).not.toEqual(w.last_activity);
  });

  test("SIGKILL → restarted with the same id; a stop is recorded as stopped (its SIGTERM abort included)", async () => {
    const h = await llamaHive(readmeProfile());
    const w = await spawnIdle(h);
    process.kill(w.pid, "SIGKILL");
    const back = await h.waitState(w.id, (x) => (x.state === "idle" && x.restart_count === 1) || x.phase === "crash_loop", "restarted", 15_000);
    expect({ phase: back.phase, restart_count: back.restart_count, slots_total: back.slots_total, reasons: back.exits.map((e: any) => e.reason) }).toEqual({
      phase: "running", restart_count: 1, slots_total: 1, reasons: ["killed"],
    });
    // It serves through the proxy again.
    const res = await h.api(`/v1/workers/${w.id}/proxy/v1/chat/completions`, { json: { ...CHAT, max_tokens: 4 } });
    expect((await sseData(res)).at(-1)).toBe("[DONE]");

    const stop = await h.api(`/v1/workers/${w.id}`, { method: "DELETE" });
    expect(stop.status).toBe(200);
    const final: any = await stop.json();
    expect(final.last_exit).toMatchObject({ reason: "stopped", code: null, signal: "SIGABRT", message: "stopped on request (SIGABRT)" });
    expect(final.exits.map((e: any) => e.reason)).toEqual(["killed", "stopped"]);
    expect(pidAlive(back.pid)).toBe(false);
  });

  test("--parallel 4: four slots from GET /props; concurrent requests never take more, and all are served", async () => {
    const profile = readmeProfile();
    const h = await llamaHive({ ...profile, args: [...(profile.args as string[]), "--parallel", "4"] });
    const w = await spawnIdle(h);
    expect({ slots_total: w.slots_total, slots_available: w.slots_available }).toEqual({ slots_total: 4, slots_available: 4 });
    let maxInFlight = 0;
    h.registry.onChange(({ worker }) => {
      if (worker.id === w.id) maxInFlight = Math.max(maxInFlight, worker.in_flight);
    });
    const answers = await Promise.all(
      Array.from({ length: 8 }, () => h.api(`/v1/workers/${w.id}/proxy/v1/chat/completions`, { json: { ...CHAT, max_tokens: 48 } }).then(sseData)),
    );
    for (const a of answers) expect(a.at(-1)).toBe("[DONE]");
    expect(maxInFlight).toBeGreaterThan(0);
    expect(maxInFlight).toBeLessThanOrEqual(4);
    const after = await h.waitState(w.id, (x) => x.in_flight === 0, "all done");
    expect({ state: after.state, slots_available: after.slots_available }).toEqual({ state: "idle", slots_available: 4 });
  });
});
