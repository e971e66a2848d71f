/**
 * GET /v1/devices, /v1/resources, /v1/backends and /v1/capacity through createApp on a real
 * socket, Bearer-protected, with fake nvidia-smi and rocm-smi on PATH.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createApp } from "../src/app.ts";
import { defaultConfig } from "../src/config.ts";
import { resourcesController } from "../src/http/resources.ts";
import { profileSupport } from "../src/resources/backends.ts";
import { catalogEstimator, createHostResources } from "../src/resources/index.ts";
import type { FootprintSource } from "../src/resources/model-footprint.ts";
import { serve, type HiveServer } from "../src/server.ts";
import { fakeSmi, type FakeSmi } from "./fixtures/fake-smi-path.ts";
import { tinyLlamaSpec, writeGguf } from "./fixtures/gguf-writer.ts";
import { memoryLogger, tempDir } from "./helpers.ts";

const TOKEN = "resources-token-0123456789";
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

interface Started {
  url: string;
  smi: FakeSmi;
  resources: ReturnType<typeof createHostResources>;
  modelRef: string;
  get(path: string, auth?: boolean): Promise<Response>;
}

const open: Array<() => void> = [];
afterEach(() => {
  for (const close of open.splice(0)) close();
});

async function start(o: { nvidia: string; rocm?: string; ttlS?: number; timeoutS?: number; writeGpus?: string } = { nvidia: "two-gpus" }): Promise<Started> {
  const dir = tempDir("rbee-res-api-");
  const smi = fakeSmi({ rocm: o.rocm !== undefined });
  let nvidia = o.nvidia;
  if (o.writeGpus) {
    nvidia = join(dir.path, "gpus");
    mkdirSync(nvidia);
    writeFileSync(join(nvidia, "query-gpu.csv"), o.writeGpus);
  }
  const config = defaultConfig(dir.path);
  Object.assign(config.resources, { cache_ttl_s: o.ttlS ?? 60, tool_timeout_s: o.timeoutS ?? 10, gpu_reserve_mb: 512, ram_reserve_mb: 2048, overhead_mb: 0 });
  // A custom profile whose binary exists; the built-in llm-worker-rbee is not installed here.
  const binary = join(dir.path, "llama-server");
  writeFileSync(binary, "#!/bin/sh\n");
  chmodSync(binary, 0o755);
  config.workers.profiles = { "llama-server": { binary, backends: ["cpu", "cuda", "rocm"] } };
  const logger = memoryLogger();
  const resources = createHostResources({
    config,
    modelsDir: join(dir.path, "models"),
    logger,
    inventory: {
      env: smi.env({ nvidia, rocm: o.rocm }),
      platform: "linux",
      arch: "x64",
      cpus: () => Array(32).fill({ model: "AMD EPYC 9354 32-Core Processor" }),
      readFile: async () => "MemTotal: 131072000 kB\nMemAvailable: 98304000 kB\n",
      statfs: async () => ({ bsize: 4096, blocks: 262_144_000, bavail: 131_072_000 }),
    },
    ramUseOf: () => null,
    groupOf: () => null,
  });
  const model = join(dir.path, "tiny.gguf");
  writeGguf(model, tinyLlamaSpec());
  const modelRef = `file:${model}`;
  const catalog = new Map<string, FootprintSource>([[modelRef, { local_path: model, format: "gguf", metadata: {}, files: [{ path: "tiny.gguf", local_path: model, size_bytes: Bun.file(model).size }] }]]);
  const controller = resourcesController({
    inventory: resources.inventory,
    preflight: resources.preflight,
    profiles: () => profileSupport(config, dir.path),
    counts: () => ({ models: catalog.size, workers: resources.ledger.list().length }),
    estimateModel: catalogEstimator((ref) => catalog.get(ref) ?? null, resources.footprints, resources.preflight),
  });
  const app = createApp({ config, logger, apiToken: TOKEN, controllers: [controller] });
  const server: HiveServer = serve((r) => app.fetch(r), { host: "127.0.0.1", port: 0, bodyLimitBytes: 1 << 20, logger });
  open.push(() => {
    server.stop(true);
    smi.cleanup();
    dir.cleanup();
  });
  return {
    url: server.url,
    smi,
    resources,
    modelRef,
    get: (path, auth = true) => fetch(server.url + path, { headers: auth ? { authorization: `Bearer ${TOKEN}` } : {} }),
  };
}

describe("host routes", () => {
  test("GET /v1/devices: the upstream shape with detail, what workers hold, counts", async () => {
    const h = await start({ nvidia: "two-gpus", rocm: "mi210x2" });
    await h.resources.preflight.admit({ workerId: "worker-a", backend: "cuda", device: 1, estimate: h.resources.preflight.estimate({ weightsBytes: 2 * GiB, contextLength: null, layers: null, embedding: null, heads: null, kvHeads: null, keyLength: null, valueLength: null, kvBytesPerElement: 2 }) });
    const res = await h.get("/v1/devices");
    expect(res.status).toBe(200);
    const body: any = await res.json();
    expect(body.cpu).toEqual({
      cores: 32, ram_gb: 125, model: "AMD EPYC 9354 32-Core Processor", arch: "x64", ram_total_bytes: 131072000 * 1024, ram_available_bytes: 98304000 * 1024,
      reserved_bytes: 0, available_bytes: 98304000 * 1024 - 2048 * MiB, workers: [],
    });
    expect(body.gpus.map((g: any) => [g.id, g.name, g.vram_gb, g.backend, g.health, g.reserved_bytes, g.workers])).toEqual([
      ["gpu0", "NVIDIA GeForce RTX 4090", 23.99, "cuda", "ok", 0, []],
      ["gpu1", "NVIDIA GeForce RTX 3090", 24, "cuda", "ok", 2 * GiB, ["worker-a"]],
      ["gpu2", "AMD Instinct MI210", 63.98, "rocm", "ok", 0, []],
      ["gpu3", "AMD Instinct MI210", 63.98, "rocm", "ok", 0, []],
    ]);
    expect(body.gpus[1]).toMatchObject({ uuid: "GPU-0b3e9c55-91a2-4f7d-8e61-c2d4a7f5b392", memory_free_bytes: 5480 * MiB, available_bytes: 5480 * MiB - 512 * MiB - 2 * GiB, temperature_c: 61, power_w: 298.55 });
    expect([body.models, body.workers]).toEqual([1, 1]);
    expect(body.detection).toEqual({ nvidia: { status: "found", reason: null }, rocm: { status: "found", reason: null }, apple: { status: "skipped", reason: "not macOS" } });
  });

  test("GET /v1/resources: GiB fields for queen-rbee, exact bytes beside them", async () => {
    const h = await start({ nvidia: "two-gpus" });
    const body: any = await (await h.get("/v1/resources")).json();
    expect(body).toEqual({
      ram_total_gb: 125, ram_available_gb: 93.75, disk_total_gb: 1000, disk_available_gb: 500,
      ram_total_bytes: 131072000 * 1024, ram_available_bytes: 98304000 * 1024, disk_total_bytes: 262_144_000 * 4096, disk_available_bytes: 131_072_000 * 4096,
      disk_path: expect.stringMatching(/\/rbee-res-api-[^/]+\/models$/),
      cpu: { cores: 32, model: "AMD EPYC 9354 32-Core Processor", arch: "x64" },
      gpus: [
        { id: "gpu0", name: "NVIDIA GeForce RTX 4090", backend: "cuda", vram_total_gb: 23.99, vram_free_gb: 23.16, memory_total_bytes: 24564 * MiB, memory_free_bytes: 23713 * MiB, health: "ok", reserved_bytes: 0, available_bytes: 23713 * MiB - 512 * MiB, workers: [] },
        { id: "gpu1", name: "NVIDIA GeForce RTX 3090", backend: "cuda", vram_total_gb: 24, vram_free_gb: 5.35, memory_total_bytes: 24576 * MiB, memory_free_bytes: 5480 * MiB, health: "ok", reserved_bytes: 0, available_bytes: 5480 * MiB - 512 * MiB, workers: [] },
      ],
      taken_at: expect.any(Number),
    });
  });

  test("GET /v1/backends: a top-level array; cpu always, GPU backends by their devices, with profiles and binaries", async () => {
    const h = await start({ nvidia: "two-gpus", rocm: "mi210x2" });
    expect(await (await h.get("/v1/backends")).json()).toEqual([
      { name: "cpu", available: true, devices: ["cpu"], profiles: ["llm-worker-rbee", "llama-server"], binary_installed: true, reason: null },
      { name: "cuda", available: true, devices: ["gpu0", "gpu1"], profiles: ["llm-worker-rbee", "llama-server"], binary_installed: true, reason: null },
      { name: "rocm", available: true, devices: ["gpu2", "gpu3"], profiles: ["llama-server"], binary_installed: true, reason: null },
      { name: "metal", available: false, devices: [], profiles: ["llm-worker-rbee"], binary_installed: false, reason: "no metal devices: not macOS" },
    ]);
    const cpuOnly = await start({ nvidia: "error" });
    const backends = (await (await cpuOnly.get("/v1/backends")).json()) as any[];
    expect(backends.find((b) => b.name === "cuda")).toEqual({
      name: "cuda", available: false, devices: [], profiles: ["llm-worker-rbee", "llama-server"], binary_installed: true,
      reason: "no cuda devices: nvidia-smi exited with code 9: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.",
    });
  });

  test("GET /v1/capacity: 204 fits, 409 with the numbers, 400 unknown device, 404 unknown model", async () => {
    // gpu0 has room; gpu1 has 1 MiB above its 512 MiB reserve.
    const h = await start({
      nvidia: "custom",
      writeGpus: "0, GPU-aaaaaaaa-0000-4000-8000-000000000000, NVIDIA A10, 23028, 14836, 8192, 550.54.15, 8.6, 00000000:01:00.0, 40, 0, 55.10\n" +
        "1, GPU-bbbbbbbb-0000-4000-8000-000000000000, NVIDIA A10, 23028, 22515, 513, 550.54.15, 8.6, 00000000:02:00.0, 44, 100, 140.33\n",
    });
    const q = (device: string, extra = "") => h.get(`/v1/capacity?device=${device}&model=${encodeURIComponent(h.modelRef)}${extra}`);
    const fits = await q("gpu0");
    expect(fits.status).toBe(204);
    expect(await fits.text()).toBe("");
    // tiny model at its own 2048 context: 3072 B of weights + 2048 × 1024 B of KV cache, no overhead.
    const no = await q("gpu1");
    expect(no.status).toBe(409);
    const body: any = await no.json();
    expect(body.error.code).toBe("INSUFFICIENT_VRAM");
    expect(body.error.message).toBe("not enough GPU memory on gpu1 (NVIDIA A10): the model needs 0.00 GiB; 0.50 GiB free, 0.50 GiB kept in reserve, 0.00 GiB reserved for 0 other workers: 0.00 GiB available");
    expect(body.error.details).toMatchObject({ device: "gpu1", needed_bytes: 3072 + 2048 * 1024, free_bytes: 513 * MiB, reserve_bytes: 512 * MiB, reserved_bytes: 0, available_bytes: MiB });
    expect(body.error.details.estimate).toMatchObject({ context_length: 2048, context_source: "model", kv_cache_bytes: 2048 * 1024 });
    // A smaller context fits: 3072 + 512 × 1024 < 1 MiB.
    expect((await q("gpu1", "&context=512")).status).toBe(204);
    expect((await q("cpu")).status).toBe(204);
    const bad = await q("gpu9");
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as any).error).toMatchObject({ code: "UNKNOWN_DEVICE", details: { device: "gpu9" } });
    const unknown = await h.get(`/v1/capacity?device=gpu0&model=${encodeURIComponent("hf:nobody/nothing")}`);
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toEqual({ error: { code: "MODEL_NOT_FOUND", message: "model hf:nobody/nothing is not in the catalog of this host (download it first)", details: { model_ref: "hf:nobody/nothing" } } });
    expect((await h.get("/v1/capacity?device=gpu0")).status).toBe(400);
    expect(((await (await q("gpu0", "&context=0")).json()) as any).error.message).toBe("query parameter context: must be an integer from 1 to 1048576");
    expect(h.resources.ledger.list()).toEqual([]);
  });

  test("every host route needs the token and is in the OpenAPI spec", async () => {
    const h = await start({ nvidia: "two-gpus" });
    for (const path of ["/v1/devices", "/v1/resources", "/v1/backends", `/v1/capacity?device=cpu&model=${encodeURIComponent(h.modelRef)}`]) {
      expect((await h.get(path, false)).status).toBe(401);
    }
    const spec: any = await (await h.get("/openapi/json", false)).json();
    for (const path of ["/v1/devices", "/v1/resources", "/v1/backends", "/v1/capacity"]) {
      expect(spec.paths[path].get.tags).toEqual(["resources"]);
      expect(spec.paths[path].get.summary.length).toBeGreaterThan(20);
    }
    expect(spec.paths["/v1/devices"].get.responses["200"].content["application/json"].schema).toEqual({ $ref: "#/components/schemas/DeviceList" });
    expect(spec.components.schemas.BackendList.type).toBe("array");
    expect(Object.keys(spec.paths["/v1/capacity"].get.responses)).toEqual(expect.arrayContaining(["204", "400", "404", "409"]));
  });

  test("a burst of requests runs the tools once; a hung tool delays one answer by its timeout, never hangs it", async () => {
    const h = await start({ nvidia: "two-gpus", rocm: "mi210x2" });
    const answers = await Promise.all(Array.from({ length: 20 }, () => h.get("/v1/devices")));
    expect(answers.map((a) => a.status)).toEqual(Array(20).fill(200));
    expect(h.smi.calls().length).toBe(4);
    const hung = await start({ nvidia: "hang", timeoutS: 0.3 });
    const body: any = await (await hung.get("/v1/devices")).json();
    expect(body.gpus).toEqual([]);
    expect(body.detection.nvidia).toEqual({ status: "error", reason: "nvidia-smi did not answer within 0.3 s (killed)" });
  });
});
