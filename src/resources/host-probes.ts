/**
 * CPU, RAM and disk of the host. Linux reads /proc/meminfo; macOS asks `sysctl` and `vm_stat`;
 * anything else falls back to node:os. File readers, statfs and the tool runner are passed in so
 * every path runs in tests on any machine.
 */
import { cpus as osCpus, freemem, totalmem } from "node:os";
import { dirname } from "node:path";
import type { ToolRunner } from "./tool-runner.ts";

export interface MemoryInfo {
  total_bytes: number;
  available_bytes: number;
  /** Where the numbers came from: "/proc/meminfo", "sysctl+vm_stat" or "os". */
  source: string;
}

/** MemTotal and MemAvailable (kB); kernels before 3.14 lack MemAvailable: free + buffers + cached. */
export function parseMeminfo(text: string): { total_bytes: number; available_bytes: number } | null {
  const kb = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^(\w+):\s+(\d+)\s*kB/.exec(line);
    if (m) kb.set(m[1]!, Number(m[2]) * 1024);
  }
  const total = kb.get("MemTotal");
  if (total === undefined) return null;
  const available = kb.get("MemAvailable") ?? (kb.get("MemFree") ?? 0) + (kb.get("Buffers") ?? 0) + (kb.get("Cached") ?? 0);
  return { total_bytes: total, available_bytes: Math.min(available, total) };
}

/**
 * `vm_stat`: what can be had without swapping is free + inactive + speculative pages (inactive and
 * speculative pages are reclaimable file cache), times the page size in its first line.
 */
export function parseVmStat(text: string): number | null {
  const pageSize = Number(/page size of (\d+) bytes/.exec(text)?.[1]);
  if (!Number.isFinite(pageSize) || pageSize <= 0) return null;
  const pages = (label: string) => Number(new RegExp(`^${label}:\\s+(\\d+)\\.?`, "m").exec(text)?.[1] ?? NaN);
  const free = pages("Pages free");
  if (!Number.isFinite(free)) return null;
  const inactive = pages("Pages inactive");
  const speculative = pages("Pages speculative");
  return (free + (Number.isFinite(inactive) ? inactive : 0) + (Number.isFinite(speculative) ? speculative : 0)) * pageSize;
}

export interface ProbeDeps {
  platform: NodeJS.Platform;
  run: ToolRunner;
  timeoutMs: number;
  env: Record<string, string | undefined>;
  readFile: (path: string) => Promise<string>;
}

export async function probeMemory(d: ProbeDeps): Promise<MemoryInfo & { note: string | null }> {
  if (d.platform === "linux") {
    try {
      const parsed = parseMeminfo(await d.readFile("/proc/meminfo"));
      if (parsed) return { ...parsed, source: "/proc/meminfo", note: null };
    } catch {
      // fall through to node:os
    }
    return { total_bytes: totalmem(), available_bytes: freemem(), source: "os", note: "/proc/meminfo unreadable; RAM from node:os" };
  }
  if (d.platform === "darwin") {
    const [size, vm] = await Promise.all([
      d.run(["sysctl", "-n", "hw.memsize"], { timeoutMs: d.timeoutMs, env: d.env }),
      d.run(["vm_stat"], { timeoutMs: d.timeoutMs, env: d.env }),
    ]);
    const total = size.ok ? Number(size.stdout.trim()) : NaN;
    const available = vm.ok ? parseVmStat(vm.stdout) : null;
    if (Number.isFinite(total) && total > 0 && available !== null) {
      return { total_bytes: total, available_bytes: Math.min(available, total), source: "sysctl+vm_stat", note: null };
    }
    const why = !size.ok ? size.reason : !vm.ok ? vm.reason : "unexpected sysctl/vm_stat output";
    return { total_bytes: totalmem(), available_bytes: freemem(), source: "os", note: `${why}; RAM from node:os` };
  }
  return { total_bytes: totalmem(), available_bytes: freemem(), source: "os", note: null };
}

export interface CpuInfo {
  cores: number;
  model: string;
  arch: string;
}

export function probeCpu(list: { model: string }[] = osCpus(), arch: string = process.arch): CpuInfo {
  return { cores: list.length, model: list[0]?.model.trim() || "unknown", arch };
}

export interface DiskInfo {
  path: string;
  total_bytes: number;
  available_bytes: number;
}

export type StatFs = (path: string) => Promise<{ bsize: number; blocks: number; bavail: number }>;

/**
 * Space of the filesystem that holds `path`: the models dir, or the nearest existing directory
 * above it (the dir is created at the first download). Unprivileged space (bavail) is what counts.
 */
export async function probeDisk(path: string, statfs: StatFs): Promise<DiskInfo | null> {
  let p = path;
  for (;;) {
    try {
      const s = await statfs(p);
      return { path: p, total_bytes: s.blocks * s.bsize, available_bytes: s.bavail * s.bsize };
    } catch {
      const up = dirname(p);
      if (up === p) return null;
      p = up;
    }
  }
}
