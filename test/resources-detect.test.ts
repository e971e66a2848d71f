/**
 * Device detection against fake nvidia-smi / rocm-smi executables on PATH replaying recorded
 * outputs (several GPUs, [N/A] and [Not Supported], MIG, CUDA_VISIBLE_DEVICES, an old driver, a
 * lost GPU, an error exit, a hang, a missing tool), and the host probes with injected readers.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { detectNvidia, parseComputeApps, parseNvidiaList, parseNvidiaQuery, applyCudaVisibleDevices } from "../src/resources/nvidia-smi.ts";
import { detectAmd, parseRocmSmiJson } from "../src/resources/rocm-smi.ts";
import { parseMeminfo, parseVmStat, probeDisk, probeMemory } from "../src/resources/host-probes.ts";
import { detectApple, metalWorkingSetLimit } from "../src/resources/apple-silicon.ts";
import { DeviceInventory } from "../src/resources/device-inventory.ts";
import { runTool, type ToolRunner } from "../src/resources/tool-runner.ts";
import { GIB } from "../src/resources/types.ts";
import { fakeSmi, type FakeSmi } from "./fixtures/fake-smi-path.ts";
import { memoryLogger } from "./helpers.ts";
import { ManualClock } from "./manual-clock.ts";

const MiB = 1024 * 1024;
const QUERY = "nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used,memory.free,driver_version,compute_cap,pci.bus_id,temperature.gpu,utilization.gpu,power.draw --format=csv,noheader,nounits";
const UUID_4090 = "GPU-6a2d6d71-6d3f-7b2e-1a54-2f9c8e1b7a10";
const UUID_3090 = "GPU-0b3e9c55-91a2-4f7d-8e61-c2d4a7f5b392";

let smi: FakeSmi;
const made: FakeSmi[] = [];
afterEach(() => {
  for (const m of made.splice(0)) m.cleanup();
});
/** A fresh PATH with the fakes (each call its own, all removed after the test). */
const newSmi = (opts?: Parameters<typeof fakeSmi>[0]) => {
  smi = fakeSmi(opts);
  made.push(smi);
  return smi;
};

const nvidia = (scenario: string, extra: Record<string, string> = {}, timeoutMs = 10_000) => {
  newSmi();
  return detectNvidia(runTool, { env: smi.env({ nvidia: scenario, extra }), timeoutMs });
};

describe("nvidia-smi", () => {
  test("two GPUs: every field, per-process memory, the three calls", async () => {
    const r = await nvidia("two-gpus");
    expect(r.status).toBe("found");
    expect(r.reason).toBeNull();
    expect(r.notes).toEqual(["GPUs of different models and CUDA_DEVICE_ORDER is not PCI_BUS_ID: CUDA may number them differently from nvidia-smi (set CUDA_DEVICE_ORDER=PCI_BUS_ID)"]);
    expect(r.devices[0]).toEqual({
      id: "gpu0",
      name: "NVIDIA GeForce RTX 4090",
      vram_gb: 23.99,
      backend: "cuda",
      vendor: "nvidia",
      index: 0,
      physical_index: 0,
      uuid: UUID_4090,
      memory_total_bytes: 24564 * MiB,
      memory_used_bytes: 388 * MiB,
      memory_free_bytes: 23713 * MiB,
      unified_memory: false,
      utilization_percent: 0,
      temperature_c: 38,
      power_w: 21.34,
      driver_version: "550.54.15",
      compute_capability: "8.9",
      pci_bus_id: "00000000:01:00.0",
      mig: null,
      per_worker_limit_bytes: null,
      health: "ok",
      health_reason: null,
    });
    expect(r.devices[1]).toMatchObject({ id: "gpu1", name: "NVIDIA GeForce RTX 3090", vram_gb: 24, memory_free_bytes: 5480 * MiB, utilization_percent: 97, power_w: 298.55, compute_capability: "8.6" });
    expect(r.processes).toEqual([{ pid: 48213, gpu_uuid: UUID_3090, used_bytes: 18352 * MiB }]);
    expect(smi.calls().sort()).toEqual([QUERY, "nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader,nounits", "nvidia-smi -L"].sort());
  });

  test("[N/A] and [Not Supported] are nulls, not faults; a process without a number is left out", async () => {
    const r = await nvidia("na-fields");
    expect(r.devices.map((d) => [d.name, d.temperature_c, d.utilization_percent, d.power_w, d.health])).toEqual([
      ["Tesla T4", 29, 0, 13.87, "ok"],
      ["NVIDIA GeForce GTX 1050 Ti", null, null, null, "ok"],
    ]);
    expect(r.processes).toEqual([]);
  });

  test("a MIG host: instances listed, one worker limited to the largest instance", async () => {
    const r = await nvidia("mig");
    expect(r.devices[0]!.mig).toEqual({
      instances: [
        { uuid: "MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f", profile: "3g.40gb", memory_bytes: 40e9 },
        { uuid: "MIG-cba663e8-9bed-5b6b-8c0e-a32b93e3ec9e", profile: "2g.20gb", memory_bytes: 20e9 },
        { uuid: "MIG-3e5f7a91-0c2d-5b4e-8f61-d7a9b3c5e2f0", profile: "1g.10gb", memory_bytes: 10e9 },
      ],
    });
    expect(r.devices[0]).toMatchObject({ per_worker_limit_bytes: 40e9, utilization_percent: null, health: "ok" });
    expect(r.devices[1]).toMatchObject({ mig: null, per_worker_limit_bytes: null, memory_free_bytes: 81307 * MiB });
    // CUDA_VISIBLE_DEVICES naming one instance: the worker gets that instance only.
    const one = await nvidia("mig", { CUDA_VISIBLE_DEVICES: "MIG-cba663e8-9bed-5b6b-8c0e-a32b93e3ec9e" });
    expect(one.devices.map((d) => [d.id, d.index, d.physical_index, d.per_worker_limit_bytes])).toEqual([["gpu0", 0, 0, 20e9]]);
  });

  test("CUDA_VISIBLE_DEVICES renumbers what workers see: indices, uuid prefixes, the first unknown entry ends the list", async () => {
    const seen = async (value: string) => {
      const r = await nvidia("four-gpus", { CUDA_VISIBLE_DEVICES: value });
      smi.cleanup();
      return { devices: r.devices.map((d) => `${d.id}=${d.physical_index}`), status: r.status, reason: r.reason, notes: r.notes };
    };
    expect(await seen("2,0")).toEqual({ devices: ["gpu0=2", "gpu1=0"], status: "found", reason: null, notes: [] });
    expect(await seen("GPU-44444444,1")).toEqual({ devices: ["gpu0=3", "gpu1=1"], status: "found", reason: null, notes: [] });
    expect(await seen("1,7,0")).toEqual({
      devices: ["gpu0=1"], status: "found", reason: null,
      notes: ['CUDA_VISIBLE_DEVICES: "7" names no GPU of this host; it and what follows are ignored (as CUDA does)'],
    });
    expect(await seen("")).toEqual({ devices: [], status: "none", reason: "CUDA_VISIBLE_DEVICES hides every GPU", notes: [] });
    expect(await seen("-1")).toEqual({
      devices: [], status: "none", reason: "CUDA_VISIBLE_DEVICES hides every GPU",
      notes: ['CUDA_VISIBLE_DEVICES: "-1" names no GPU of this host; it and what follows are ignored (as CUDA does)'],
    });
  });

  test("an old driver without compute_cap: the field is dropped, the query retried", async () => {
    const r = await nvidia("old-driver");
    expect(r.status).toBe("found");
    expect(r.devices[0]).toMatchObject({ name: "Tesla K80", compute_capability: null, memory_total_bytes: 11441 * MiB, power_w: 26.54 });
    expect(r.notes).toEqual(["nvidia-smi does not know the field compute_cap (old driver); reported as null"]);
    expect(smi.calls()[0]).toBe(QUERY);
    expect(smi.calls()[1]).toBe(QUERY.replace("compute_cap,", ""));
  });

  test("a lost GPU is listed unhealthy with the tool's words", async () => {
    const r = await nvidia("faulty");
    expect(r.devices[0]!.health).toBe("ok");
    expect(r.devices[1]).toMatchObject({
      id: "gpu1", memory_total_bytes: 0, memory_free_bytes: 0, health: "unhealthy",
      health_reason: "memory.total [Unknown Error]; memory.used [Unknown Error]; memory.free [Unknown Error]; temperature.gpu [GPU is lost]; utilization.gpu [Unknown Error]; power.draw [Unknown Error]",
    });
  });

  test("an error exit, a hang and a missing tool all mean no NVIDIA GPUs, with the reason", async () => {
    expect(await nvidia("error")).toEqual({
      devices: [], processes: [], status: "error", notes: [],
      reason: "nvidia-smi exited with code 9: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.",
    });
    smi.cleanup();
    expect(await nvidia("hang", {}, 300)).toEqual({ devices: [], processes: [], status: "error", notes: [], reason: "nvidia-smi did not answer within 0.3 s (killed)" });
    smi.cleanup();
    newSmi({ nvidia: false });
    expect(await detectNvidia(runTool, { env: smi.env(), timeoutMs: 1000 })).toEqual({ devices: [], processes: [], status: "none", notes: [], reason: "nvidia-smi not found on PATH" });
  });

  test("parsers: a comma in a GPU name, blank lines, the -L and compute-apps forms", () => {
    const fields = ["index", "uuid", "name", "memory.total"];
    const { gpus, skipped } = parseNvidiaQuery("\n0, GPU-a, Odd, Name, GPU, 1024\nnonsense\n", fields);
    expect(gpus.map((g) => [g.index, g.name, g.memoryTotalMiB])).toEqual([[0, "Odd, Name, GPU", 1024]]);
    expect(skipped).toEqual(["nonsense"]);
    expect(parseNvidiaList("GPU 0: A100 (UUID: GPU-x)\n  MIG 1g.5gb  Device  0: (UUID: MIG-GPU-x/7/0)\n")).toEqual(
      new Map([["GPU-x", [{ uuid: "MIG-GPU-x/7/0", profile: "1g.5gb", memory_bytes: 5e9 }]]]),
    );
    expect(parseComputeApps("12, GPU-x, 100\n13, GPU-x, [N/A]\n")).toEqual([{ pid: 12, gpu_uuid: "GPU-x", used_bytes: 100 * MiB }]);
    const gpu = gpus[0]!;
    expect(applyCudaVisibleDevices([gpu, { ...gpu, index: 1, uuid: "GPU-ab" }], new Map(), "GPU-a").visible).toEqual([]); // ambiguous prefix
    expect(applyCudaVisibleDevices([gpu], new Map(), "0,0").visible.length).toBe(1); // a repeat ends the list
  });
});

describe("rocm-smi", () => {
  const amd = (scenario: string, extra: Record<string, string> = {}, timeoutMs = 10_000) => {
    newSmi();
    return detectAmd(runTool, { env: smi.env({ rocm: scenario, extra }), timeoutMs, firstId: 0 });
  };

  test("two MI210: memory from the JSON form, numbered after NVIDIA's", async () => {
    newSmi();
    const r = await detectAmd(runTool, { env: smi.env({ rocm: "mi210x2" }), timeoutMs: 10_000, firstId: 2 });
    expect(r.status).toBe("found");
    expect(r.devices[1]).toEqual({
      id: "gpu3", name: "AMD Instinct MI210", vram_gb: 63.98, backend: "rocm", vendor: "amd", index: 1, physical_index: 1, uuid: null,
      memory_total_bytes: 68702699520, memory_used_bytes: 34370224128, memory_free_bytes: 68702699520 - 34370224128, unified_memory: false,
      utilization_percent: null, temperature_c: null, power_w: null, driver_version: null, compute_capability: "gfx90a", pci_bus_id: null,
      mig: null, per_worker_limit_bytes: null, health: "ok", health_reason: null,
    });
    expect(smi.calls()).toEqual(["rocm-smi --showmeminfo vram --showproductname --json"]);
  });

  test("older key spelling and a system entry; HIP_VISIBLE_DEVICES renumbers", async () => {
    expect(parseRocmSmiJson(await Bun.file(`${import.meta.dir}/fixtures/smi/rocm/radeon-old-keys.json`).text())).toEqual([
      { index: 0, name: "Navi 31 [Radeon RX 7900 XT/7900 XTX]", totalBytes: 25753026560, usedBytes: 1549647872, gfx: "gfx1100" },
    ]);
    const r = await amd("mi210x2", { HIP_VISIBLE_DEVICES: "1" });
    expect(r.devices.map((d) => [d.id, d.index, d.physical_index])).toEqual([["gpu0", 0, 1]]);
  });

  test("an error exit, a hang, a missing tool and non-JSON output: no AMD GPUs, with the reason", async () => {
    expect(await amd("error")).toEqual({ devices: [], status: "error", notes: [], reason: "rocm-smi exited with code 1: ERROR:root:Driver not initialized (amdgpu not found in modules)" });
    smi.cleanup();
    expect(await amd("hang", {}, 300)).toEqual({ devices: [], status: "error", notes: [], reason: "rocm-smi did not answer within 0.3 s (killed)" });
    smi.cleanup();
    newSmi({ rocm: false });
    expect(await detectAmd(runTool, { env: smi.env(), timeoutMs: 1000, firstId: 0 })).toEqual({ devices: [], status: "none", notes: [], reason: "rocm-smi not found on PATH" });
    const garbled: ToolRunner = async () => ({ ok: true, stdout: "WARNING: something\n", stderr: "", code: 0, pid: 1 });
    expect(await detectAmd(garbled, { env: {}, timeoutMs: 1000, firstId: 0 })).toEqual({ devices: [], status: "error", notes: [], reason: "rocm-smi did not print JSON" });
  });
});

describe("host probes", () => {
  const MEMINFO = "MemTotal:       32791552 kB\nMemFree:         1024000 kB\nMemAvailable:   20480000 kB\nBuffers:          204800 kB\nCached:          8192000 kB\n";

  test("/proc/meminfo: MemAvailable, or free + buffers + cached on old kernels", async () => {
    expect(parseMeminfo(MEMINFO)).toEqual({ total_bytes: 32791552 * 1024, available_bytes: 20480000 * 1024 });
    expect(parseMeminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 200 kB\n")).toEqual({ total_bytes: 1024000, available_bytes: 310 * 1024 });
    expect(parseMeminfo("garbage")).toBeNull();
    const noTools: ToolRunner = async () => {
      throw new Error("no tool on Linux");
    };
    expect(await probeMemory({ platform: "linux", run: noTools, timeoutMs: 1, env: {}, readFile: async () => MEMINFO })).toEqual({
      total_bytes: 32791552 * 1024, available_bytes: 20480000 * 1024, source: "/proc/meminfo", note: null,
    });
  });

  const VM_STAT = `Mach Virtual Memory Statistics: (page size of 16384 bytes)
Pages free:                               50000.
Pages active:                            400000.
Pages inactive:                          300000.
Pages speculative:                        10000.
Pages throttled:                              0.
Pages wired down:                        150000.
Pages purgeable:                          20000.
`;

  test("macOS: sysctl hw.memsize and vm_stat (free + inactive + speculative pages)", async () => {
    expect(parseVmStat(VM_STAT)).toBe(360000 * 16384);
    const calls: string[] = [];
    const mac: ToolRunner = async (argv) => {
      calls.push(argv.join(" "));
      const out = argv[0] === "vm_stat" ? VM_STAT : argv.join(" ") === "sysctl -n hw.memsize" ? "34359738368\n" : argv.join(" ") === "sysctl -n iogpu.wired_limit_mb" ? "0\n" : "";
      return { ok: true, stdout: out, stderr: "", code: 0, pid: 1 };
    };
    const memory = await probeMemory({ platform: "darwin", run: mac, timeoutMs: 1000, env: {}, readFile: async () => "" });
    expect(memory).toEqual({ total_bytes: 32 * GIB, available_bytes: 360000 * 16384, source: "sysctl+vm_stat", note: null });
    const apple = await detectApple(mac, { platform: "darwin", arch: "arm64", cpuModel: "Apple M2 Pro", memory, env: {}, timeoutMs: 1000, firstId: 0 });
    // 32 GiB ≤ 36 GiB: Metal's working set is 2/3 of RAM; free is the smaller of that and what RAM has available.
    expect(apple.devices[0]).toMatchObject({
      id: "gpu0", name: "Apple M2 Pro", backend: "metal", vendor: "apple", unified_memory: true,
      memory_total_bytes: Math.floor((32 * GIB * 2) / 3), memory_free_bytes: 360000 * 16384, vram_gb: 21.33,
    });
    expect(calls.sort()).toEqual(["sysctl -n hw.memsize", "sysctl -n iogpu.wired_limit_mb", "vm_stat"]);
    expect(metalWorkingSetLimit(64 * GIB, null)).toBe(48 * GIB);
    expect(metalWorkingSetLimit(64 * GIB, 58000)).toBe(58000 * MiB);
    expect((await detectApple(mac, { platform: "linux", arch: "x64", cpuModel: "x", memory, env: {}, timeoutMs: 1, firstId: 0 })).status).toBe("skipped");
  });

  test("disk: statfs of the models dir, or of its nearest existing parent", async () => {
    const seen: string[] = [];
    const statfs = async (p: string) => {
      seen.push(p);
      if (p !== "/srv") throw Object.assign(new Error("ENOENT"), { code: "ENOENT" });
      return { bsize: 4096, blocks: 1000, bavail: 250 };
    };
    expect(await probeDisk("/srv/rbee/models", statfs)).toEqual({ path: "/srv", total_bytes: 4096000, available_bytes: 1024000 });
    expect(seen).toEqual(["/srv/rbee/models", "/srv/rbee", "/srv"]);
  });
});

describe("DeviceInventory", () => {
  const inventory = (env: Record<string, string>, ttlMs: number, logger = memoryLogger(), clock = new ManualClock()) =>
    new DeviceInventory({
      modelsDir: "/srv/models",
      cacheTtlMs: ttlMs,
      toolTimeoutMs: 300,
      logger,
      env,
      platform: "linux",
      arch: "x64",
      cpus: () => Array(16).fill({ model: "AMD EPYC 9354 32-Core Processor" }),
      readFile: async () => "MemTotal: 65536000 kB\nMemAvailable: 32768000 kB\n",
      statfs: async () => ({ bsize: 4096, blocks: 2_000_000, bavail: 500_000 }),
      clock,
    });

  test("a burst of 20 callers runs each tool once; NVIDIA then AMD ids on a mixed host", async () => {
    newSmi();
    const inv = inventory(smi.env({ nvidia: "two-gpus", rocm: "mi210x2" }), 60_000);
    const all = await Promise.all(Array.from({ length: 20 }, () => inv.snapshot()));
    expect(new Set(all).size).toBe(1);
    expect(inv.probes).toBe(1);
    expect(smi.calls().length).toBe(4); // query, -L, compute-apps, rocm-smi
    const s = all[0]!;
    expect(s.gpus.map((g) => `${g.id}:${g.backend}:${g.index}:${g.name}`)).toEqual([
      "gpu0:cuda:0:NVIDIA GeForce RTX 4090", "gpu1:cuda:1:NVIDIA GeForce RTX 3090", "gpu2:rocm:0:AMD Instinct MI210", "gpu3:rocm:1:AMD Instinct MI210",
    ]);
    expect(s.cpu).toEqual({ cores: 16, model: "AMD EPYC 9354 32-Core Processor", arch: "x64" });
    expect(s.memory).toEqual({ total_bytes: 65536000 * 1024, available_bytes: 32768000 * 1024, source: "/proc/meminfo" });
    expect(s.disk).toEqual({ path: "/srv/models", total_bytes: 2_000_000 * 4096, available_bytes: 500_000 * 4096 });
    expect(s.detection).toEqual({ nvidia: { status: "found", reason: null }, rocm: { status: "found", reason: null }, apple: { status: "skipped", reason: "not macOS" } });
  });

  test("the cache expires after its TTL: the tools run again", async () => {
    newSmi();
    const clock = new ManualClock();
    const inv = inventory(smi.env({ nvidia: "two-gpus", rocm: "error" }), 2000, memoryLogger(), clock);
    await inv.snapshot();
    clock.advance(1999);
    await inv.snapshot();
    expect(inv.probes).toBe(1);
    clock.advance(1);
    await inv.snapshot();
    expect(inv.probes).toBe(2);
  });

  test("a failing tool: no GPUs of that kind, one log line per reason (not per request), never a rejection", async () => {
    newSmi({ rocm: false });
    const logger = memoryLogger();
    const inv = inventory(smi.env({ nvidia: "hang" }), 0, logger);
    const first = await inv.snapshot();
    await inv.snapshot();
    expect(inv.probes).toBe(2);
    expect(first.gpus).toEqual([]);
    expect(first.detection.nvidia).toEqual({ status: "error", reason: "nvidia-smi did not answer within 0.3 s (killed)" });
    expect(first.detection.rocm).toEqual({ status: "none", reason: "rocm-smi not found on PATH" });
    const lines = logger.lines.map((l) => JSON.parse(l)).filter((l) => l.msg === "device detection");
    expect(lines.map((l) => [l.level, l.probe, l.reason])).toEqual([
      ["warn", "nvidia", "no NVIDIA GPUs: nvidia-smi did not answer within 0.3 s (killed)"],
      ["info", "rocm", "no AMD GPUs: rocm-smi not found on PATH"],
    ]);
  });
});
