/**
 * The memory ledger and the spawn preflight: refusals with their numbers, atomic admission under
 * concurrency, release on every exit path, force, real use from the device, backend and device
 * checks, MIG limits, unhealthy devices, and the eviction question.
 *
 * Phase 2 (the spawn path) must add the same checks end to end: 20 concurrent POST
 * /v1/workers/spawn against one fake GPU that fits exactly N → exactly N start; the reservation is
 * released on stop, crash, load failure and a spawn refused after admission.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { defaultConfig, type HiveConfig } from "../src/config.ts";
import { createHostResources } from "../src/resources/index.ts";
import { MemoryLedger, budgetOf, evictionCandidates, planEviction, type Reservation } from "../src/resources/memory-ledger.ts";
import { estimateMemory, sizeOnlyShape, type MemoryEstimate } from "../src/resources/memory-estimate.ts";
import { fakeSmi, type FakeSmi } from "./fixtures/fake-smi-path.ts";
import { memoryLogger, rejection } from "./helpers.ts";
import { ManualClock } from "./manual-clock.ts";

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const UUID = "GPU-77777777-aaaa-4bbb-8ccc-000000000007";

let smi: FakeSmi | undefined;
const made: FakeSmi[] = [];
afterEach(() => {
  for (const m of made.splice(0)) m.cleanup();
  smi = undefined;
});
const newSmi = () => {
  smi = fakeSmi({ rocm: false });
  made.push(smi);
  return smi;
};

/** One fake GPU with `freeMiB` free, and optional per-process use. */
function oneGpu(freeMiB: number, apps = ""): string {
  const dir = join(newSmi().dir, "gpu");
  mkdirSync(dir);
  writeFileSync(join(dir, "query-gpu.csv"), `0, ${UUID}, NVIDIA RTX 6000 Ada Generation, 49140, ${49140 - freeMiB}, ${freeMiB}, 550.54.15, 8.9, 00000000:41:00.0, 35, 0, 24.50\n`);
  writeFileSync(join(dir, "compute-apps.csv"), apps);
  return dir;
}

function host(scenario: string, o: { config?: Partial<HiveConfig["resources"]>; ramAvailableKb?: number; ramUseOf?: (pid: number) => number | null; groupOf?: (pid: number) => number | null; ttlS?: number } = {}) {
  const config = defaultConfig("/tmp");
  Object.assign(config.resources, { gpu_reserve_mb: 512, ram_reserve_mb: 2048, overhead_mb: 0, cache_ttl_s: o.ttlS ?? 60, ...o.config });
  const logger = memoryLogger();
  const tools = scenario.startsWith("/") && smi ? smi : newSmi();
  const r = createHostResources({
    config,
    modelsDir: "/srv/models",
    logger,
    clock: new ManualClock(),
    inventory: {
      env: tools.env({ nvidia: scenario }),
      platform: "linux",
      arch: "x64",
      cpus: () => Array(8).fill({ model: "Test CPU" }),
      readFile: async () => `MemTotal: ${64 * 1024 * 1024} kB\nMemAvailable: ${o.ramAvailableKb ?? 32 * 1024 * 1024} kB\n`,
      statfs: async () => ({ bsize: 4096, blocks: 1000, bavail: 500 }),
    },
    ramUseOf: o.ramUseOf ?? (() => null),
    groupOf: o.groupOf ?? (() => null),
  });
  return { ...r, logger };
}

const sized = (bytes: number): MemoryEstimate => estimateMemory(sizeOnlyShape(bytes), { contextCap: 4096, overheadBytes: 0 });

describe("spawn preflight", () => {
  test("a spawn that does not fit is refused with 507 INSUFFICIENT_VRAM and the numbers", async () => {
    const h = host(oneGpu(8 * 1024));
    await h.preflight.admit({ workerId: "w-1", backend: "cuda", device: 0, estimate: sized(5 * GiB) });
    const e = await rejection(h.preflight.admit({ workerId: "w-2", backend: "cuda", device: 0, estimate: sized(3 * GiB) }));
    expect(e.status).toBe(507);
    expect(e.code).toBe("INSUFFICIENT_VRAM");
    expect(e.message).toBe(
      "not enough GPU memory on gpu0 (NVIDIA RTX 6000 Ada Generation): the model needs 3.00 GiB; 8.00 GiB free, 0.50 GiB kept in reserve, 5.00 GiB reserved for 1 other worker: 2.50 GiB available",
    );
    expect(e.details).toEqual({
      device: "gpu0", backend: "cuda", needed_bytes: 3 * GiB, free_bytes: 8 * GiB, reserve_bytes: 512 * MiB, reserved_bytes: 5 * GiB,
      available_bytes: 8 * GiB - 512 * MiB - 5 * GiB, per_worker_limit_bytes: null, workers: ["w-1"], estimate: sized(3 * GiB),
    });
    expect(h.ledger.list().map((r) => r.workerId)).toEqual(["w-1"]);
  });

  test("cpu spawns are checked against available RAM minus the RAM reserve: 507 INSUFFICIENT_RAM", async () => {
    const h = host("two-gpus", { ramAvailableKb: 10 * 1024 * 1024 });
    const ok = await h.preflight.admit({ workerId: "w-cpu", backend: "cpu", device: 0, estimate: sized(7 * GiB) });
    expect(ok.reservation).toMatchObject({ deviceId: "cpu", pool: "ram", bytes: 7 * GiB, forced: false });
    const e = await rejection(h.preflight.admit({ workerId: "w-cpu2", backend: "cpu", device: 0, estimate: sized(2 * GiB) }));
    expect([e.status, e.code]).toEqual([507, "INSUFFICIENT_RAM"]);
    expect(e.message).toBe("not enough RAM on cpu (Test CPU): the model needs 2.00 GiB; 10.00 GiB free, 2.00 GiB kept in reserve, 7.00 GiB reserved for 1 other worker: 1.00 GiB available");
  });

  test("20 concurrent spawns against a GPU that fits exactly 5: exactly 5 are admitted", async () => {
    // 5 × 3 GiB + the 512 MiB reserve = 15 872 MiB free.
    const h = host(oneGpu(5 * 3 * 1024 + 512), { ttlS: 0 });
    const outcomes = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) => h.preflight.admit({ workerId: `w-${i}`, backend: "cuda", device: 0, estimate: sized(3 * GiB) })),
    );
    const admitted = outcomes.filter((o) => o.status === "fulfilled");
    const refused = outcomes.filter((o): o is PromiseRejectedResult => o.status === "rejected");
    expect(admitted.length).toBe(5);
    expect(refused.map((r) => r.reason.code)).toEqual(Array(15).fill("INSUFFICIENT_VRAM"));
    expect(refused[0]!.reason.details).toMatchObject({ reserved_bytes: 15 * GiB, available_bytes: 0 });
    expect(h.ledger.inPool(`gpu:${UUID}`).length).toBe(5);
  });

  test("admission is atomic however the snapshots interleave", async () => {
    // An inventory whose answers arrive in a shuffled order, each a fresh object with the same numbers.
    const h = host(oneGpu(4 * 1024 + 512));
    const real = await h.inventory.snapshot();
    const waiting: Array<() => void> = [];
    const inventory = { snapshot: () => new Promise<typeof real>((resolve) => waiting.push(() => resolve(structuredClone(real)))) };
    const { SpawnPreflight } = await import("../src/resources/preflight.ts");
    const preflight = new SpawnPreflight({ inventory, ledger: h.ledger, settings: h.settings, logger: h.logger, ramUseOf: () => null, groupOf: () => null });
    const all = Promise.allSettled(Array.from({ length: 20 }, (_, i) => preflight.admit({ workerId: `r-${i}`, backend: "cuda", device: 0, estimate: sized(GiB) })));
    for (const i of [7, 3, 19, 0, 11, 5, 14, 2, 18, 9, 1, 16, 4, 13, 8, 17, 6, 12, 10, 15]) waiting[i]!();
    expect((await all).filter((o) => o.status === "fulfilled").length).toBe(4);
  });

  test("the reservation is released on every exit path, and only once", async () => {
    const h = host(oneGpu(2 * 1024 + 512));
    const fill = () => h.preflight.admit({ workerId: "next", backend: "cuda", device: 0, estimate: sized(GiB) });
    for (const path of ["stop", "crash", "load_failure", "refused_after_admission"]) {
      await h.preflight.admit({ workerId: `a-${path}`, backend: "cuda", device: 0, estimate: sized(GiB) });
      await h.preflight.admit({ workerId: `b-${path}`, backend: "cuda", device: 0, estimate: sized(GiB) });
      expect((await rejection(fill())).code).toBe("INSUFFICIENT_VRAM");
      // What phase 2 calls on that path: the worker's memory goes back at once.
      expect(h.preflight.release(`a-${path}`)?.workerId).toBe(`a-${path}`);
      expect(h.preflight.release(`a-${path}`)).toBeUndefined(); // a second exit notice frees nothing more
      await fill();
      h.preflight.release("next");
      h.preflight.release(`b-${path}`);
      expect(h.ledger.list()).toEqual([]);
    }
    // A spawn refused by the check holds nothing to release.
    expect(h.preflight.release("never-admitted")).toBeUndefined();
  });

  test("force admits without the check, logs it, and the memory still counts for later spawns", async () => {
    const h = host(oneGpu(2 * 1024));
    const forced = await h.preflight.admit({ workerId: "big", backend: "cuda", device: 0, estimate: sized(4 * GiB), force: true });
    expect(forced.forced).toBe(true);
    expect(forced.reservation).toMatchObject({ workerId: "big", bytes: 4 * GiB, forced: true });
    const line = h.logger.lines.map((l) => JSON.parse(l)).find((l) => l.msg === "spawn admitted without the memory check (force)");
    expect(line).toMatchObject({ level: "warn", worker_id: "big", device: "gpu0", needed_bytes: 4 * GiB, available_bytes: 2 * GiB - 512 * MiB, health: "ok" });
    const e = await rejection(h.preflight.admit({ workerId: "small", backend: "cuda", device: 0, estimate: sized(MiB) }));
    expect(e.details).toMatchObject({ reserved_bytes: 4 * GiB });
    // A forced spawn that would have fit is not reported as forced.
    const h2 = host(oneGpu(8 * 1024));
    expect((await h2.preflight.admit({ workerId: "fits", backend: "cuda", device: 0, estimate: sized(GiB), force: true })).forced).toBe(false);
  });

  test("a worker counts its estimate until the device reports its real use, then only what is not visible yet", async () => {
    // The device reports 2 GiB used by pid 4242 and 1 GiB by pid 4300, a child in 4242's group.
    const apps = `4242, ${UUID}, 2048\n4300, ${UUID}, 1024\n9999, ${UUID}, 512\n`;
    const h = host(oneGpu(20 * 1024, apps), { groupOf: (pid) => (pid === 4300 ? 4242 : pid) });
    await h.preflight.admit({ workerId: "loading", backend: "cuda", device: 0, estimate: sized(5 * GiB) });
    const s = await h.inventory.snapshot();
    expect(h.preflight.budgets(s).get("gpu0")).toMatchObject({ reserved_bytes: 5 * GiB });
    h.preflight.attachPid("loading", 4242);
    expect(h.preflight.budgets(s).get("gpu0")).toMatchObject({ reserved_bytes: 2 * GiB, available_bytes: 20 * GiB - 512 * MiB - 2 * GiB });
    expect(await h.preflight.workerMemory("loading")).toEqual({ device: "gpu0", estimate_bytes: 5 * GiB, used_bytes: 3 * GiB });
    // RAM: resident anonymous memory of the worker's process.
    const r = host("two-gpus", { ramUseOf: (pid) => (pid === 77 ? 3 * GiB : null) });
    await r.preflight.admit({ workerId: "cpu-w", backend: "cpu", device: 0, estimate: sized(4 * GiB) });
    r.preflight.attachPid("cpu-w", 77);
    expect(await r.preflight.workerMemory("cpu-w")).toEqual({ device: "cpu", estimate_bytes: 4 * GiB, used_bytes: 3 * GiB });
    expect(r.preflight.budgets(await r.inventory.snapshot()).get("cpu")).toMatchObject({ reserved_bytes: GiB });
  });

  test("a restarted worker is re-admitted without counting against itself", async () => {
    const h = host(oneGpu(3 * 1024 + 512));
    await h.preflight.admit({ workerId: "w", backend: "cuda", device: 0, estimate: sized(3 * GiB) });
    h.preflight.attachPid("w", 123);
    const again = await h.preflight.admit({ workerId: "w", backend: "cuda", device: 0, estimate: sized(3 * GiB) });
    expect(again.reservation).toMatchObject({ workerId: "w", pid: 123 });
    expect(h.ledger.list().length).toBe(1);
  });

  test("a backend the host does not have, or a device that does not exist: 400 with the devices that exist", async () => {
    const h = host("two-gpus");
    const rocm = await rejection(h.preflight.admit({ workerId: "x", backend: "rocm", device: 0, estimate: sized(1) }));
    expect([rocm.status, rocm.code, rocm.message]).toEqual([
      400, "BACKEND_UNAVAILABLE",
      'backend "rocm" is not available on this host (available: cpu, cuda); devices: cpu (cpu 0: Test CPU), gpu0 (cuda 0: NVIDIA GeForce RTX 4090), gpu1 (cuda 1: NVIDIA GeForce RTX 3090)',
    ]);
    const devices = [
      { id: "cpu", backend: "cpu", index: 0, name: "Test CPU" },
      { id: "gpu0", backend: "cuda", index: 0, name: "NVIDIA GeForce RTX 4090" },
      { id: "gpu1", backend: "cuda", index: 1, name: "NVIDIA GeForce RTX 3090" },
    ];
    expect(rocm.details).toEqual({ backend: "rocm", available_backends: ["cpu", "cuda"], devices });
    const two = await rejection(h.preflight.admit({ workerId: "x", backend: "cuda", device: 2, estimate: sized(1) }));
    expect([two.status, two.code, two.details]).toEqual([400, "UNKNOWN_DEVICE", { backend: "cuda", device: 2, devices }]);
    expect(two.message).toStartWith('backend "cuda" has no device 2 on this host; devices: cpu (cpu 0: Test CPU), gpu0');
    expect((await rejection(h.preflight.admit({ workerId: "x", backend: "cpu", device: 1, estimate: sized(1) }))).code).toBe("UNKNOWN_DEVICE");
  });

  test("MIG: one worker may not exceed the largest instance, even with the GPU free", async () => {
    const h = host("mig");
    const e = await rejection(h.preflight.admit({ workerId: "x", backend: "cuda", device: 0, estimate: sized(45e9) }));
    expect(e.message).toEndWith("; one worker may use at most 37.25 GiB here (MIG instance)");
    expect(e.details).toMatchObject({ per_worker_limit_bytes: 40e9, needed_bytes: 45e9 });
    await h.preflight.admit({ workerId: "y", backend: "cuda", device: 0, estimate: sized(39e9) });
  });

  test("an unhealthy device takes nothing: 503 DEVICE_UNHEALTHY (force still can)", async () => {
    const h = host("faulty");
    const e = await rejection(h.preflight.admit({ workerId: "x", backend: "cuda", device: 1, estimate: sized(1) }));
    expect([e.status, e.code]).toEqual([503, "DEVICE_UNHEALTHY"]);
    expect(e.message).toStartWith("gpu1 (NVIDIA GeForce RTX 3090) is unhealthy: memory.total [Unknown Error]");
    expect((await h.preflight.admit({ workerId: "x", backend: "cuda", device: 1, estimate: sized(1), force: true })).forced).toBe(true);
  });

  test("capacity answers without taking anything", async () => {
    const h = host(oneGpu(4 * 1024 + 512));
    expect((await h.preflight.capacity("gpu0", sized(4 * GiB))).fits).toBe(true);
    expect((await h.preflight.capacity("gpu0", sized(4 * GiB + 1))).fits).toBe(false);
    expect(h.ledger.list()).toEqual([]);
    expect((await rejection(h.preflight.capacity("gpu9", sized(1)))).code).toBe("UNKNOWN_DEVICE");
  });
});

describe("ledger pure parts", () => {
  const r = (workerId: string, bytes: number, pid: number | null = null): Reservation => ({ workerId, deviceId: "gpu0", pool: "p", bytes, forced: false, pid, at: 0 });

  test("budget: free − reserve − what admitted workers do not show yet", () => {
    const used = new Map([["a", 6 * GiB], ["b", GiB]]);
    const b = budgetOf({ freeBytes: 10 * GiB, reserveBytes: GiB, perWorkerLimit: null, holders: [r("a", 4 * GiB, 1), r("b", 3 * GiB, 2), r("c", 2 * GiB)], usageOf: (x) => used.get(x.workerId) ?? null });
    // a: real 6 > estimate 4 → 0 more; b: 3 − 1 = 2; c: not running yet → 2
    expect(b).toEqual({ free_bytes: 10 * GiB, reserve_bytes: GiB, reserved_bytes: 4 * GiB, available_bytes: 5 * GiB, per_worker_limit_bytes: null, workers: ["a", "b", "c"] });
  });

  test("take: the check and the record are one step; release is idempotent", () => {
    const ledger = new MemoryLedger();
    const admit = (id: string) => ledger.take({ workerId: id, deviceId: "gpu0", pool: "p", bytes: 3, forced: false, at: 0 }, (holders) => ({ admit: holders.length < 2 }));
    expect(admit("x").reservation?.workerId).toBe("x");
    expect(admit("y").reservation?.workerId).toBe("y");
    expect(admit("z").reservation).toBeNull();
    expect(ledger.release("x")?.workerId).toBe("x");
    expect(ledger.release("x")).toBeUndefined();
    expect(admit("z").reservation?.workerId).toBe("z");
  });

  test("what would free enough memory: idle workers, least recently used first", () => {
    const holders = [r("old", 4 * GiB), r("busy", 8 * GiB), r("recent", 2 * GiB, 5), r("mid", 3 * GiB)];
    const activity: Record<string, { lastUsedAt: number; busy: boolean }> = {
      old: { lastUsedAt: 100, busy: false }, busy: { lastUsedAt: 50, busy: true }, recent: { lastUsedAt: 900, busy: false }, mid: { lastUsedAt: 500, busy: false },
    };
    const candidates = evictionCandidates(holders, (x) => (x.workerId === "recent" ? 6 * GiB : null), (id) => activity[id]!);
    expect(candidates.find((c) => c.workerId === "recent")?.freesBytes).toBe(6 * GiB); // real use above its estimate
    expect(planEviction(5 * GiB, candidates)).toEqual({ workerIds: ["old", "mid"], freed_bytes: 7 * GiB, enough: true });
    expect(planEviction(20 * GiB, candidates)).toEqual({ workerIds: ["old", "mid", "recent"], freed_bytes: 13 * GiB, enough: false });
    expect(planEviction(0, candidates)).toEqual({ workerIds: [], freed_bytes: 0, enough: true });
  });
});
