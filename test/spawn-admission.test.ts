/**
 * The spawn preflight end to end, on a real hive with the fake worker: fake nvidia-smi on the
 * detection PATH (one GPU whose free memory fits an exact number of workers), the memory ledger
 * seen through GET /v1/devices, reservations released on every exit path, force, the 400s, the
 * worker record's memory fields and `{context}`; an hf: model's header read from the hub before
 * any download; HF_TOKEN kept from workers.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { FakeHub, MIN_GGUF_BYTES } from "./fixtures/fake-hub.ts";
import { fakeSmi, type FakeSmi } from "./fixtures/fake-smi-path.ts";
import { memoryChanged } from "../src/workers/worker-memory.ts";
import { FAKE_WORKER, startTestHive, waitFor, type TestHive } from "./helpers.ts";

const MiB = 1024 ** 2;
const UUID = "GPU-aaaaaaaa-0000-4000-8000-000000000000";
/** The test hives' tiny model at its own 2048 context: 3072 B of weights + 2048 × 1024 B of KV cache, no overhead. */
const TINY = 3072 + 2048 * 1024;
/** A generated hub GGUF file's header (its one 32-byte tensor follows). */
const HUB_HEADER = MIN_GGUF_BYTES - 32;
const gpuRow = (freeMiB: number) => `0, ${UUID}, NVIDIA A10, 23028, ${23028 - freeMiB}, ${freeMiB}, 550.54.15, 8.6, 00000000:01:00.0, 40, 0, 55.10\n`;

const cleanups: Array<() => unknown> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface GpuHive extends TestHive {
  smi: FakeSmi;
  /** The fake GPU's scenario directory: query-gpu.csv, compute-apps.csv. */
  gpuDir: string;
  devices(): Promise<any>;
  post(body: Record<string, unknown>): Promise<Response>;
}

/** A test hive on a host with one fake NVIDIA A10 with `freeMiB` free and no VRAM reserve. */
async function gpuHive(freeMiB: number, opts: Parameters<typeof startTestHive>[0] = {}): Promise<GpuHive> {
  const smi = fakeSmi({ rocm: false });
  cleanups.push(() => smi.cleanup());
  const gpuDir = join(smi.dir, "gpu");
  mkdirSync(gpuDir);
  writeFileSync(join(gpuDir, "query-gpu.csv"), gpuRow(freeMiB));
  const h = await startTestHive({
    ...opts,
    config: { ...opts.config, resources: { gpu_reserve_mb: 0, ...opts.config?.resources } },
    overrides: { resources: { inventory: { env: smi.env({ nvidia: gpuDir }), cpus: () => [{ model: "Test CPU" }] } }, ...opts.overrides },
  });
  cleanups.push(() => h.close());
  return Object.assign(h, {
    smi,
    gpuDir,
    devices: async () => (await h.api("/v1/devices")).json() as Promise<any>,
    post: (body: Record<string, unknown>) => h.api("/v1/workers/spawn", { json: { model_ref: h.modelRef, ...body } }),
  });
}

const gpu0 = async (h: GpuHive) => (await h.devices()).gpus[0];

describe("spawn preflight", () => {
  test("20 concurrent cuda spawns on a GPU that fits exactly 5: 5 answer 200, 15 answer 507 with the numbers", async () => {
    // 11 MiB free: 5 × 2 100 224 B fit (10.01 MiB), 6 do not.
    const h = await gpuHive(11);
    const answers = await Promise.all(Array.from({ length: 20 }, () => h.post({ backend: "cuda", device: 0 })));
    const statuses = answers.map((a) => a.status);
    expect(statuses.filter((s) => s === 200)).toHaveLength(5);
    expect(statuses.filter((s) => s === 507)).toHaveLength(15);
    const admitted = (await Promise.all(answers.filter((a) => a.status === 200).map((a) => a.json()))).map((b: any) => b.worker_id);
    for (const refused of answers.filter((a) => a.status === 507)) {
      const { error }: any = await refused.json();
      expect(error.code).toBe("INSUFFICIENT_VRAM");
      expect(error.message).toBe(
        "not enough GPU memory on gpu0 (NVIDIA A10): the model needs 0.00 GiB; 0.01 GiB free, 0.00 GiB kept in reserve, 0.01 GiB reserved for 5 other workers: 0.00 GiB available",
      );
      expect({ ...error.details, workers: [...error.details.workers].sort() }).toEqual({
        device: "gpu0",
        backend: "cuda",
        needed_bytes: TINY,
        free_bytes: 11 * MiB,
        reserve_bytes: 0,
        reserved_bytes: 5 * TINY,
        available_bytes: 11 * MiB - 5 * TINY,
        per_worker_limit_bytes: null,
        workers: [...admitted].sort(),
        estimate: {
          total_bytes: TINY, weights_bytes: 3072, kv_cache_bytes: 2048 * 1024, overhead_bytes: 0, context_length: 2048,
          context_source: "model", model_context_length: 2048, kv_bytes_per_token: 1024, note: null,
        },
      });
    }
    // Only the admitted ones exist; one detection served the whole burst.
    expect(((await (await h.api("/v1/workers/list")).json()) as any).workers.map((w: any) => w.id).sort()).toEqual([...admitted].sort());
    expect(h.smi.calls().filter((c) => c.startsWith("nvidia-smi --query-gpu="))).toHaveLength(1);
    const g = await gpu0(h);
    expect([g.reserved_bytes, g.available_bytes, [...g.workers].sort()]).toEqual([5 * TINY, 11 * MiB - 5 * TINY, [...admitted].sort()]);
    for (const id of admitted) expect(((await (await h.api(`/v1/workers/${id}`)).json()) as any).memory_estimate_bytes).toBe(TINY);
  });

  test("the reservation is released by a stop, a crash, a load failure and shutdown; a refused spawn takes none", async () => {
    const h = await gpuHive(64, {
      config: {
        workers: {
          profiles: {
            failer: { binary: FAKE_WORKER, env: { FAKE_WORKER_FAIL_LOAD: "1" } },
          },
        },
      },
    });
    const held = async () => [...(await gpu0(h)).workers].sort();
    const keep = await h.spawn({ backend: "cuda" });
    const stopped = await h.spawn({ backend: "cuda" });
    expect(await held()).toEqual([keep.worker_id, stopped.worker_id].sort());

    expect((await h.api(`/v1/workers/${stopped.worker_id}`, { method: "DELETE" })).status).toBe(200);
    expect(await held()).toEqual([keep.worker_id]);

    // A crash of a running worker (SIGKILL from outside, as the OOM killer sends it); restarts are off.
    const crashed = await h.spawn({ backend: "cuda" });
    process.kill((await h.waitState(crashed.worker_id, (w) => w.state === "idle", "idle")).pid, "SIGKILL");
    expect((await h.waitState(crashed.worker_id, (w) => w.phase === "exited", "killed")).last_exit.reason).toBe("killed");
    expect(await held()).toEqual([keep.worker_id]);

    const failed = await h.spawn({ backend: "cuda", profile: "failer" });
    expect((await h.waitState(failed.worker_id, (w) => w.phase === "exited", "load failed")).last_exit.reason).toBe("load_failed");
    expect(await held()).toEqual([keep.worker_id]);

    // Refused after nothing was taken: a device that does not fit, then a launch that cannot get a port.
    const tooBig = await h.post({ backend: "cuda", device: 0, context: 1_048_576 });
    expect(tooBig.status).toBe(507);
    expect(await held()).toEqual([keep.worker_id]);
    h.resources.inventory.invalidate();
    expect((await gpu0(h)).reserved_bytes).toBe(TINY);

    await h.close();
    expect(h.resources.ledger.list()).toEqual([]);
  });

  test("a spawn that cannot get a port after its admission gives the memory back (503 NO_FREE_PORT)", async () => {
    const holder = Bun.listen({ hostname: "0.0.0.0", port: 0, socket: { data() {} } });
    cleanups.push(() => holder.stop(true));
    const h = await gpuHive(64, { config: { workers: { port_min: holder.port, port_max: holder.port } } });
    const res = await h.post({ backend: "cuda", device: 0 });
    expect(res.status).toBe(503);
    expect(((await res.json()) as any).error.code).toBe("NO_FREE_PORT");
    expect(h.resources.ledger.list()).toEqual([]);
    expect((await gpu0(h)).workers).toEqual([]);
  });

  test("a restart keeps the reservation; a crash loop gives it back; the operator's retry takes it again", async () => {
    const h = await gpuHive(64, {
      config: {
        restart: { enabled: true, max_attempts: 1, base_backoff_s: 0, max_backoff_s: 0, jitter: 0 },
        workers: { profiles: { crasher: { binary: FAKE_WORKER, env: { FAKE_WORKER_CRASH_AFTER_MS: "0" } } } },
      },
    });
    const heldAtRestart: boolean[] = [];
    h.bus.on("restarting", (e) => heldAtRestart.push(h.resources.ledger.get(e.worker_id) !== undefined));
    const { worker_id } = await h.spawn({ backend: "cuda", profile: "crasher" });
    const parked = await h.waitState(worker_id, (w) => w.phase === "crash_loop", "crash loop");
    expect(parked.restart_count).toBe(1);
    expect(heldAtRestart).toEqual([true]);
    expect((await gpu0(h)).workers).toEqual([]);
    // The retry re-admits it under the same id (it crashes again, and parks again).
    const loopsBefore = parked.exits.length;
    expect((await h.api(`/v1/workers/${worker_id}/restart`, { method: "POST" })).status).toBe(200);
    expect(heldAtRestart).toEqual([true, true]);
    await h.waitState(worker_id, (w) => w.phase === "crash_loop" && w.exits.length > loopsBefore, "crash loop again");
    expect((await gpu0(h)).workers).toEqual([]);
  });

  test("an operator's retry of a crash loop that no longer fits is refused with 507 and stays parked", async () => {
    const h = await gpuHive(3, {
      config: {
        restart: { enabled: true, max_attempts: 0, base_backoff_s: 0, max_backoff_s: 0, jitter: 0 },
        workers: { profiles: { crasher: { binary: FAKE_WORKER, env: { FAKE_WORKER_CRASH_AFTER_MS: "0" } } } },
      },
    });
    const { worker_id } = await h.spawn({ backend: "cuda", profile: "crasher" });
    await h.waitState(worker_id, (w) => w.phase === "crash_loop", "crash loop");
    // Its memory went back; another worker took it meanwhile.
    await h.spawn({ backend: "cuda" });
    const retry = await h.api(`/v1/workers/${worker_id}/restart`, { method: "POST" });
    expect(retry.status).toBe(507);
    expect(((await retry.json()) as any).error.code).toBe("INSUFFICIENT_VRAM");
    expect(((await (await h.api(`/v1/workers/${worker_id}`)).json()) as any).phase).toBe("crash_loop");
  });

  test("force admits a spawn that does not fit, logs it, and its memory counts for the next spawn", async () => {
    const h = await gpuHive(3);
    await h.spawn({ backend: "cuda" });
    expect((await h.post({ backend: "cuda", device: 0 })).status).toBe(507);
    const forced = await h.spawn({ backend: "cuda", force: true });
    const line = h.logs.map((l) => JSON.parse(l)).find((l) => l.msg === "spawn admitted without the memory check (force)");
    expect(line).toMatchObject({ level: "warn", worker_id: forced.worker_id, device: "gpu0", needed_bytes: TINY, available_bytes: 3 * MiB - TINY });
    const g = await gpu0(h);
    expect([g.reserved_bytes, g.workers.length]).toEqual([2 * TINY, 2]);
    const after: any = await (await h.post({ backend: "cuda", device: 0 })).json();
    expect(after.error.details).toMatchObject({ reserved_bytes: 2 * TINY, available_bytes: 3 * MiB - 2 * TINY });
  });

  test("a device index the backend does not have: 400 UNKNOWN_DEVICE; a backend the host does not have: 400 BACKEND_UNAVAILABLE", async () => {
    const h = await gpuHive(64);
    const devices = [
      { id: "cpu", backend: "cpu", index: 0, name: "Test CPU" },
      { id: "gpu0", backend: "cuda", index: 0, name: "NVIDIA A10" },
    ];
    const unknown = await h.post({ backend: "cuda", device: 3 });
    expect(unknown.status).toBe(400);
    expect(await unknown.json()).toEqual({
      error: {
        code: "UNKNOWN_DEVICE",
        message: 'backend "cuda" has no device 3 on this host; devices: cpu (cpu 0: Test CPU), gpu0 (cuda 0: NVIDIA A10)',
        details: { backend: "cuda", device: 3, devices },
      },
    });
    const metal = await h.post({ backend: "metal", device: 0 });
    expect(metal.status).toBe(400);
    expect(await metal.json()).toEqual({
      error: {
        code: "BACKEND_UNAVAILABLE",
        message: 'backend "metal" is not available on this host (available: cpu, cuda); devices: cpu (cpu 0: Test CPU), gpu0 (cuda 0: NVIDIA A10)',
        details: { backend: "metal", available_backends: ["cpu", "cuda"], devices },
      },
    });
    expect((await h.post({ backend: "cpu", device: 1 })).status).toBe(400);
    expect(h.resources.ledger.list()).toEqual([]);
  });

  test("a file: model that is not valid GGUF is refused with 400 INVALID_GGUF, by spawn and by download", async () => {
    const h = await gpuHive(64);
    const bad = join(h.modelsDir, "bad.gguf");
    writeFileSync(bad, "GGUF fake model");
    const expected = {
      error: {
        code: "INVALID_GGUF",
        message: `${bad} is not a valid GGUF file: 15 bytes is too short for a GGUF header (truncated?)`,
        details: { file: bad, reason: "15 bytes is too short for a GGUF header (truncated?)" },
      },
    };
    const spawn = await h.post({ model_ref: `file:${bad}`, backend: "cpu", device: 0 });
    expect(spawn.status).toBe(400);
    expect(await spawn.json()).toEqual(expected);
    const download = await h.api("/v1/models/download", { json: { model_ref: `file:${bad}` } });
    expect(download.status).toBe(400);
    expect(await download.json()).toEqual(expected);
    expect(h.resources.ledger.list()).toEqual([]);
  });
});

describe("worker records and the worker's command line", () => {
  test("memory_used_bytes comes from the device's per-process numbers; the reservation counts only what it does not show yet", async () => {
    const h = await gpuHive(64);
    const { worker_id } = await h.spawn({ backend: "cuda" });
    const running = await h.waitState(worker_id, (w) => w.state === "idle", "idle");
    expect(running).toMatchObject({ memory_estimate_bytes: TINY, memory_used_bytes: null });
    // The device now lists the worker's process with 1 MiB.
    writeFileSync(join(h.gpuDir, "compute-apps.csv"), `${running.pid}, ${UUID}, 1\n`);
    h.resources.inventory.invalidate();
    const g = await gpu0(h);
    expect([g.reserved_bytes, g.workers]).toEqual([TINY - MiB, [worker_id]]);
    expect(await h.waitState(worker_id, (w) => w.memory_used_bytes !== null, "memory used")).toMatchObject({ memory_estimate_bytes: TINY, memory_used_bytes: MiB });
  });

  test("a record's memory_used_bytes changes when the use appears, goes, or moves by 1 % or more", () => {
    expect([memoryChanged(null, null), memoryChanged(null, 0), memoryChanged(5 * MiB, null)]).toEqual([false, true, true]);
    expect([memoryChanged(100 * MiB, 100 * MiB + MiB - 1), memoryChanged(100 * MiB, 101 * MiB), memoryChanged(100 * MiB, 99 * MiB)]).toEqual([false, true, true]);
    expect([memoryChanged(0, 0), memoryChanged(0, 1)]).toEqual([false, true]);
  });

  test("{context} is the context the estimate was sized for: the spawn's, else the model's own (capped)", async () => {
    const h = await gpuHive(64, {
      config: {
        workers: {
          profiles: {
            llama: {
              binary: FAKE_WORKER,
              args: ["--model", "{model_path}", "--port", "{port}", "-c", "{context}"],
              readiness: "http",
              healthy_status: ["ok"],
              env: { FAKE_WORKER_MODE: "llama-server" },
            },
          },
        },
      },
    });
    const argsOf = (pid: number) => readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean);
    const own = await h.spawn({ backend: "cuda", profile: "llama" });
    const asked = await h.spawn({ backend: "cuda", profile: "llama", context: 512 });
    // Ready: the process has long been exec'd (right after the spawn /proc may still show the hive's own command line).
    const a = await h.waitState(own.worker_id, (w) => w.state === "idle", "ready");
    const b = await h.waitState(asked.worker_id, (w) => w.state === "idle", "ready");
    expect(argsOf(a.pid).slice(-2)).toEqual(["-c", "2048"]);
    expect(argsOf(b.pid).slice(-2)).toEqual(["-c", "512"]);
    expect([a.memory_estimate_bytes, b.memory_estimate_bytes]).toEqual([TINY, 3072 + 512 * 1024]);
  });

  test("GET /v1/models lists each model with the estimate a spawn at the default context reserves", async () => {
    const h = await gpuHive(64);
    const { worker_id } = await h.spawn({ backend: "cuda" });
    const idle = await h.waitState(worker_id, (w) => w.state === "idle", "idle");
    const listed = ((await (await h.api("/v1/models")).json()) as any).models as any[];
    expect(listed.map((m) => [m.model_ref, m.memory_estimate_bytes])).toEqual([[idle.model_ref, TINY]]);
  });

  test("workers do not inherit HF_TOKEN unless their profile sets it", async () => {
    const before = process.env.HF_TOKEN;
    process.env.HF_TOKEN = "hf_test_secret_token";
    cleanups.push(() => (before === undefined ? delete process.env.HF_TOKEN : (process.env.HF_TOKEN = before)));
    const h = await gpuHive(64, {
      workerEnv: { FAKE_WORKER_PRINT_ENV: "HF_TOKEN" },
      config: { workers: { profiles: { hub: { binary: FAKE_WORKER, env: { HF_TOKEN: "hf_profile_token" } } } } },
    });
    const line = async (id: string) =>
      waitFor(async () => ((await (await h.api(`/v1/workers/${id}/logs`)).json()) as any).lines.find((l: string) => l.startsWith("env HF_TOKEN")), { what: "env line" });
    const plain = await h.spawn();
    const hub = await h.spawn({ profile: "hub" });
    expect(await line(plain.worker_id)).toBe("env HF_TOKEN unset");
    expect(await line(hub.worker_id)).toBe("env HF_TOKEN=hf_profile_token");
  });
});

describe("an hf: model not in the catalog", () => {
  async function hubHive(freeMiB: number) {
    // The hub and its CDN on different host names: the token may go to the hub only.
    const hub = await FakeHub.start({ ggufHeaders: true, hubHost: "localhost" });
    cleanups.push(() => hub.stop());
    hub.addRepo({ id: "org/tiny-GGUF", files: [{ path: "tiny.Q4_K_M.gguf", size: 64 * 1024, seed: 3 }] });
    const h = await gpuHive(freeMiB, { env: { HF_ENDPOINT: hub.url, HF_TOKEN: "hf_hub_only_token" } });
    return { hub, h };
  }

  test("its header is read from the hub before anything is downloaded: spawns that do not fit start no download", async () => {
    const { hub, h } = await hubHive(1);
    // Three at once: they share one plan and one header read.
    const answers = await Promise.all([1, 2, 3].map(() => h.post({ model_ref: "hf:org/tiny-GGUF", backend: "cuda", device: 0 })));
    expect(answers.map((a) => a.status)).toEqual([507, 507, 507]);
    const { error }: any = await answers[0]!.json();
    // Tensor data: the file past its header; the hyperparameters of the tiny llama header.
    expect(error.details.estimate).toMatchObject({ weights_bytes: 64 * 1024 - HUB_HEADER, kv_cache_bytes: 2048 * 1024, context_length: 2048 });
    expect(((await (await h.api("/v1/models/downloads")).json()) as any).downloads).toEqual([]);
    // Two API calls (revision, file list) and one range request (the header reader's first 2 MB
    // chunk, which holds this small file whole), redirected to the CDN: the token went to the hub only.
    expect(hub.log.map((e) => [e.server, e.authorization, e.range, e.status])).toEqual([
      ["hub", "Bearer hf_hub_only_token", null, 200],
      ["hub", "Bearer hf_hub_only_token", null, 200],
      ["hub", "Bearer hf_hub_only_token", "bytes=0-1999999", 302],
      ["cdn", null, "bytes=0-1999999", 206],
    ]);
  });

  test("a spawn that fits downloads it; the catalog keeps its GGUF header", async () => {
    const { h } = await hubHive(64);
    const { worker_id } = await h.spawn({ model_ref: "hf:org/tiny-GGUF", backend: "cuda" });
    const ready = await h.waitState(worker_id, (w) => w.state === "idle", "idle");
    expect(ready).toMatchObject({ memory_estimate_bytes: 64 * 1024 - HUB_HEADER + 2048 * 1024, download_id: expect.any(String) });
    const { models }: any = await (await h.api("/v1/models")).json();
    expect(models[0].metadata.gguf).toMatchObject({ architecture: "llama", name: "tiny-llama-test", context_length: 2048, block_count: 4, tensor_data_bytes: 64 * 1024 - HUB_HEADER, shards: 1 });
  });
});
