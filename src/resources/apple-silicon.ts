/**
 * Apple Silicon: one Metal GPU sharing system RAM (unified memory). Metal lets a process keep
 * about 2/3 of RAM resident on the GPU on machines up to 36 GiB and about 3/4 above
 * (`recommendedMaxWorkingSetSize`); `sysctl iogpu.wired_limit_mb` overrides it when set. Its
 * free memory is the smaller of that limit and the RAM available; placement counts it against RAM.
 */
import type { ToolRunner } from "./tool-runner.ts";
import type { MemoryInfo } from "./host-probes.ts";
import { GIB, MIB, toGiB, type GpuDevice } from "./types.ts";

/** The working-set limit Metal grants on a machine with `ramBytes` (no wired-limit override). */
export function metalWorkingSetLimit(ramBytes: number, wiredLimitMb: number | null): number {
  if (wiredLimitMb !== null && wiredLimitMb > 0) return Math.min(ramBytes, wiredLimitMb * MIB);
  return Math.floor(ramBytes > 36 * GIB ? ramBytes * 0.75 : (ramBytes * 2) / 3);
}

export interface AppleDetection {
  devices: GpuDevice[];
  status: "found" | "none" | "skipped";
  reason: string | null;
}

export async function detectApple(
  run: ToolRunner,
  opts: { platform: NodeJS.Platform; arch: string; cpuModel: string; memory: MemoryInfo; env: Record<string, string | undefined>; timeoutMs: number; firstId: number },
): Promise<AppleDetection> {
  if (opts.platform !== "darwin") return { devices: [], status: "skipped", reason: "not macOS" };
  if (opts.arch !== "arm64") return { devices: [], status: "none", reason: "Intel Mac: no Metal backend for workers" };
  const wired = await run(["sysctl", "-n", "iogpu.wired_limit_mb"], { timeoutMs: opts.timeoutMs, env: opts.env });
  const wiredMb = wired.ok && /^\d+$/.test(wired.stdout.trim()) ? Number(wired.stdout.trim()) : null;
  const limit = metalWorkingSetLimit(opts.memory.total_bytes, wiredMb);
  const free = Math.min(limit, opts.memory.available_bytes);
  return {
    status: "found",
    reason: null,
    devices: [
      {
        id: `gpu${opts.firstId}`,
        name: opts.cpuModel,
        vram_gb: toGiB(limit),
        backend: "metal",
        vendor: "apple",
        index: 0,
        physical_index: null,
        uuid: null,
        memory_total_bytes: limit,
        memory_used_bytes: null,
        memory_free_bytes: free,
        unified_memory: true,
        utilization_percent: null,
        temperature_c: null,
        power_w: null,
        driver_version: null,
        compute_capability: null,
        pci_bus_id: null,
        mig: null,
        per_worker_limit_bytes: null,
        health: "ok",
        health_reason: null,
      },
    ],
  };
}
