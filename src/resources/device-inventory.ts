/**
 * DeviceInventory: one cached answer to "what does this host have right now?" (CPU, RAM, the
 * models dir's disk, GPUs of every vendor, per-process GPU memory). Every probe runs at once; a
 * burst of callers shares one run; a probe that fails costs its own devices only, with one log
 * line each time its reason changes (not one per request).
 */
import { readFile } from "node:fs/promises";
import { statfs as nodeStatfs } from "node:fs/promises";
import type { Clock } from "../shared/clock.ts";
import { systemClock } from "../shared/clock.ts";
import type { Logger } from "../shared/logger.ts";
import { detectApple } from "./apple-silicon.ts";
import { probeCpu, probeDisk, probeMemory, type StatFs } from "./host-probes.ts";
import { detectNvidia } from "./nvidia-smi.ts";
import { detectAmd } from "./rocm-smi.ts";
import { runTool, type ToolRunner } from "./tool-runner.ts";
import { TtlCache } from "./ttl-cache.ts";
import type { DetectionStatus, HostSnapshot } from "./types.ts";

export interface InventoryDeps {
  modelsDir: string;
  /** Seconds an answer is reused (resources.cache_ttl_s). */
  cacheTtlMs: number;
  /** Per tool run (resources.tool_timeout_s). */
  toolTimeoutMs: number;
  logger: Logger;
  run?: ToolRunner;
  /** The environment workers inherit (PATH, CUDA_VISIBLE_DEVICES, …). */
  env?: Record<string, string | undefined>;
  platform?: NodeJS.Platform;
  arch?: string;
  cpus?: () => { model: string }[];
  readFile?: (path: string) => Promise<string>;
  statfs?: StatFs;
  clock?: Clock;
}

type Vendor = "nvidia" | "rocm" | "apple";

export class DeviceInventory {
  private readonly cache: TtlCache<HostSnapshot>;
  private readonly lastReason = new Map<string, string | null>();
  private readonly listeners = new Set<(s: HostSnapshot) => void>();
  /** How many times the probes ran (tests and benches check the cache with it). */
  probes = 0;

  constructor(private readonly d: InventoryDeps) {
    this.cache = new TtlCache(() => this.probe(), d.cacheTtlMs, d.clock ?? systemClock);
  }

  /** The host as of at most `cacheTtlMs` ago. Never rejects. */
  snapshot(): Promise<HostSnapshot> {
    return this.cache.get();
  }

  /** Told about every new detection (workers' real memory use is read from it). */
  onSnapshot(listener: (s: HostSnapshot) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Drop the cached answer (after a worker started or stopped, the numbers are stale). */
  invalidate(): void {
    this.cache.invalidate();
  }

  private async probe(): Promise<HostSnapshot> {
    this.probes++;
    const d = this.d;
    const run = d.run ?? runTool;
    const env = d.env ?? process.env;
    const platform = d.platform ?? process.platform;
    const arch = d.arch ?? process.arch;
    const timeoutMs = d.toolTimeoutMs;
    const clock = d.clock ?? systemClock;
    const cpu = probeCpu(d.cpus ? d.cpus() : undefined, arch);
    const [memory, disk, nvidia, amd] = await Promise.all([
      probeMemory({ platform, run, timeoutMs, env, readFile: d.readFile ?? ((p) => readFile(p, "utf8")) }),
      probeDisk(d.modelsDir, d.statfs ?? ((p) => nodeStatfs(p))),
      platform === "darwin" ? null : detectNvidia(run, { env, timeoutMs }),
      platform === "darwin" ? null : detectAmd(run, { env, timeoutMs, firstId: 0 }),
    ]);
    // AMD devices are numbered after NVIDIA ones so that ids stay unique on a mixed host.
    const nvidiaDevices = nvidia?.devices ?? [];
    const amdDevices = (amd?.devices ?? []).map((g, i) => ({ ...g, id: `gpu${nvidiaDevices.length + i}` }));
    const apple = await detectApple(run, { platform, arch, cpuModel: cpu.model, memory, env, timeoutMs, firstId: 0 });
    if (memory.note) this.report("memory", memory.note, "warn");
    const detection: Record<Vendor, DetectionStatus> = {
      nvidia: nvidia ? { status: nvidia.status, reason: nvidia.reason } : { status: "skipped", reason: "macOS" },
      rocm: amd ? { status: amd.status, reason: amd.reason } : { status: "skipped", reason: "macOS" },
      apple: { status: apple.status, reason: apple.reason },
    };
    for (const v of ["nvidia", "rocm"] as const) {
      const s = detection[v];
      // "Not installed" is normal on a host without that vendor: info; a failing tool is a warning.
      this.report(v, s.status === "found" || s.status === "skipped" ? null : `no ${v === "nvidia" ? "NVIDIA" : "AMD"} GPUs: ${s.reason}`, s.status === "error" ? "warn" : "info");
    }
    for (const note of [...(nvidia?.notes ?? []), ...(amd?.notes ?? [])]) this.report(`note:${note}`, note, "warn");
    const snapshot: HostSnapshot = {
      taken_at: clock.now(),
      cpu,
      memory: { total_bytes: memory.total_bytes, available_bytes: memory.available_bytes, source: memory.source },
      disk,
      gpus: [...nvidiaDevices, ...amdDevices, ...apple.devices],
      processes: nvidia?.processes ?? [],
      detection,
    };
    for (const listener of this.listeners) {
      try {
        listener(snapshot);
      } catch (e) {
        this.d.logger.warn("device snapshot listener failed", { err: String(e) });
      }
    }
    return snapshot;
  }

  /** One log line when a probe's reason changes; silence while it stays the same. */
  private report(key: string, reason: string | null, level: "info" | "warn"): void {
    if (this.lastReason.get(key) === reason) return;
    const before = this.lastReason.get(key);
    this.lastReason.set(key, reason);
    if (reason) this.d.logger[level]("device detection", { probe: key.startsWith("note:") ? "note" : key, reason });
    else if (before) this.d.logger.info("device detection recovered", { probe: key });
  }
}
