/**
 * NVIDIA GPUs through nvidia-smi: the query (CSV, no header, no units), MIG instances (`-L`),
 * per-process memory (`--query-compute-apps`), and the numbering workers see after
 * CUDA_VISIBLE_DEVICES. Parsers are pure; `detectNvidia` runs the tool through a ToolRunner.
 */
import type { ToolRunner } from "./tool-runner.ts";
import { MIB, toGiB, type GpuDevice, type GpuProcess, type MigInstance } from "./types.ts";

export const NVIDIA_QUERY_FIELDS = [
  "index", "uuid", "name", "memory.total", "memory.used", "memory.free", "driver_version", "compute_cap",
  "pci.bus_id", "temperature.gpu", "utilization.gpu", "power.draw",
] as const;
export type NvidiaField = (typeof NVIDIA_QUERY_FIELDS)[number];
/** Fields an old driver may not know (compute_cap came with R510): dropped and retried, never fatal. */
const OPTIONAL_FIELDS: readonly NvidiaField[] = ["compute_cap", "power.draw", "temperature.gpu", "utilization.gpu", "pci.bus_id", "driver_version"];

export const COMPUTE_APPS_ARGS = ["--query-compute-apps=pid,gpu_uuid,used_memory", "--format=csv,noheader,nounits"];

/** A physical GPU as nvidia-smi lists it (its own index, PCI order). */
export interface NvidiaGpu {
  index: number;
  uuid: string | null;
  name: string;
  memoryTotalMiB: number | null;
  memoryUsedMiB: number | null;
  memoryFreeMiB: number | null;
  driverVersion: string | null;
  computeCap: string | null;
  pciBusId: string | null;
  temperatureC: number | null;
  utilizationPercent: number | null;
  powerW: number | null;
  /** Why this GPU cannot be used, when nvidia-smi says so ("[GPU is lost]", "[Unknown Error]", …). */
  fault: string | null;
}

/** Bracketed values nvidia-smi prints instead of a number; the harmless ones just mean "no value". */
const HARMLESS = new Set(["[n/a]", "[not supported]", "n/a", "[insufficient permissions]", ""]);

function cell(raw: string | undefined): { value: string | null; fault: string | null } {
  const v = (raw ?? "").trim();
  if (HARMLESS.has(v.toLowerCase())) return { value: null, fault: null };
  if (/^\[.*\]$/.test(v)) return { value: null, fault: v }; // [GPU is lost], [Unknown Error], [GPU requires reset]
  return { value: v, fault: null };
}

const num = (v: string | null) => {
  if (v === null) return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
};

/**
 * Lines of `--query-gpu=<fields> --format=csv,noheader,nounits`. Values are separated by ", ";
 * a GPU name holding a comma is put back together (the other fields never contain one).
 */
export function parseNvidiaQuery(text: string, fields: readonly string[] = NVIDIA_QUERY_FIELDS): { gpus: NvidiaGpu[]; skipped: string[] } {
  const gpus: NvidiaGpu[] = [];
  const skipped: string[] = [];
  const nameAt = fields.indexOf("name");
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    let parts = line.split(",");
    if (parts.length > fields.length && nameAt >= 0) {
      const extra = parts.length - fields.length;
      parts = [...parts.slice(0, nameAt), parts.slice(nameAt, nameAt + extra + 1).join(","), ...parts.slice(nameAt + extra + 1)];
    }
    if (parts.length !== fields.length) {
      skipped.push(line.trim());
      continue;
    }
    const byField = new Map<string, { value: string | null; fault: string | null }>();
    fields.forEach((f, i) => byField.set(f, cell(parts[i])));
    const get = (f: NvidiaField) => byField.get(f)?.value ?? null;
    const index = num(get("index"));
    if (index === null || !Number.isInteger(index)) {
      skipped.push(line.trim());
      continue;
    }
    const faults = [...byField.entries()].filter(([, c]) => c.fault).map(([f, c]) => `${f} ${c.fault}`);
    gpus.push({
      index,
      uuid: get("uuid"),
      name: get("name") ?? `NVIDIA GPU ${index}`,
      memoryTotalMiB: num(get("memory.total")),
      memoryUsedMiB: num(get("memory.used")),
      memoryFreeMiB: num(get("memory.free")),
      driverVersion: get("driver_version"),
      computeCap: get("compute_cap"),
      pciBusId: get("pci.bus_id"),
      temperatureC: num(get("temperature.gpu")),
      utilizationPercent: num(get("utilization.gpu")),
      powerW: num(get("power.draw")),
      fault: faults.length ? faults.join("; ") : null,
    });
  }
  return { gpus, skipped };
}

/** `nvidia-smi -L`: the MIG instances under each GPU (by GPU uuid). */
export function parseNvidiaList(text: string): Map<string, MigInstance[]> {
  const byGpu = new Map<string, MigInstance[]>();
  let current: string | null = null;
  for (const line of text.split("\n")) {
    const gpu = /^GPU\s+\d+:.*\(UUID:\s*(GPU-[^)\s]+)\)/.exec(line);
    if (gpu) {
      current = gpu[1]!;
      continue;
    }
    const mig = /^\s+MIG\s+(\S+)\s+Device\s+\d+:\s*\(UUID:\s*(MIG-[^)\s]+)\)/.exec(line);
    if (mig && current) {
      const gb = /(\d+)gb/i.exec(mig[1]!);
      const list = byGpu.get(current) ?? [];
      list.push({ uuid: mig[2]!, profile: mig[1]!, memory_bytes: gb ? Number(gb[1]) * 1e9 : 0 });
      byGpu.set(current, list);
    }
  }
  return byGpu;
}

/** `--query-compute-apps=pid,gpu_uuid,used_memory` (MiB); rows without a number are left out. */
export function parseComputeApps(text: string): GpuProcess[] {
  const out: GpuProcess[] = [];
  for (const line of text.split("\n")) {
    const parts = line.split(",").map((p) => p.trim());
    if (parts.length !== 3) continue;
    const pid = num(cell(parts[0]).value);
    const used = num(cell(parts[2]).value);
    const uuid = cell(parts[1]).value;
    if (pid === null || used === null || uuid === null) continue;
    out.push({ pid, gpu_uuid: uuid, used_bytes: used * MIB });
  }
  return out;
}

export interface VisibleGpu {
  gpu: NvidiaGpu;
  /** Set when CUDA_VISIBLE_DEVICES names a MIG instance: the worker gets only that instance. */
  mig: MigInstance | null;
}

/**
 * The GPUs a worker sees, in the order it numbers them, following CUDA's rules for
 * CUDA_VISIBLE_DEVICES: unset = all; a list of indices, `GPU-<uuid or unique prefix>` or
 * `MIG-<uuid>`; the first entry that names nothing (or repeats one) ends the list; "" = none.
 */
export function applyCudaVisibleDevices(gpus: NvidiaGpu[], migs: Map<string, MigInstance[]>, value: string | undefined): { visible: VisibleGpu[]; note: string | null } {
  if (value === undefined) return { visible: gpus.map((gpu) => ({ gpu, mig: null })), note: null };
  const visible: VisibleGpu[] = [];
  const taken = new Set<string>();
  const entries = value.split(",").map((e) => e.trim());
  for (const entry of entries) {
    let found: VisibleGpu | undefined;
    if (/^\d+$/.test(entry)) {
      const gpu = gpus.find((g) => g.index === Number(entry));
      if (gpu) found = { gpu, mig: null };
    } else if (/^GPU-/i.test(entry)) {
      const matches = gpus.filter((g) => g.uuid?.toLowerCase().startsWith(entry.toLowerCase()));
      if (matches.length === 1) found = { gpu: matches[0]!, mig: null };
    } else if (/^MIG-/i.test(entry)) {
      for (const gpu of gpus) {
        const mig = (migs.get(gpu.uuid ?? "") ?? []).find((m) => m.uuid.toLowerCase() === entry.toLowerCase());
        if (mig) found = { gpu, mig };
      }
    }
    const key = found ? (found.mig?.uuid ?? found.gpu.uuid ?? String(found.gpu.index)) : "";
    if (!found || taken.has(key)) {
      const ignored = entries.slice(entries.indexOf(entry)).filter((e) => e !== "");
      return { visible, note: ignored.length ? `CUDA_VISIBLE_DEVICES: "${entry}" names no GPU of this host; it and what follows are ignored (as CUDA does)` : null };
    }
    taken.add(key);
    visible.push(found);
  }
  return { visible, note: null };
}

/** Turn what a worker sees into devices; `firstId` numbers them (gpu0, gpu1, …). */
export function nvidiaDevices(visible: VisibleGpu[], migs: Map<string, MigInstance[]>, firstId = 0): GpuDevice[] {
  return visible.map(({ gpu, mig }, i) => {
    const total = gpu.memoryTotalMiB === null ? 0 : gpu.memoryTotalMiB * MIB;
    const used = gpu.memoryUsedMiB === null ? null : gpu.memoryUsedMiB * MIB;
    // Without memory.free the free memory is what is not used; without either it is unknown: 0.
    const free = gpu.memoryFreeMiB !== null ? gpu.memoryFreeMiB * MIB : used !== null ? Math.max(0, total - used) : 0;
    const instances = migs.get(gpu.uuid ?? "") ?? [];
    const limit = mig ? mig.memory_bytes : instances.length ? Math.max(...instances.map((m) => m.memory_bytes)) : null;
    const unhealthy = gpu.fault ?? (gpu.memoryTotalMiB === null ? "memory.total is not reported" : null);
    return {
      id: `gpu${firstId + i}`,
      name: gpu.name,
      vram_gb: toGiB(total),
      backend: "cuda" as const,
      vendor: "nvidia" as const,
      index: i,
      physical_index: gpu.index,
      uuid: gpu.uuid,
      memory_total_bytes: total,
      memory_used_bytes: used,
      memory_free_bytes: free,
      unified_memory: false,
      utilization_percent: gpu.utilizationPercent,
      temperature_c: gpu.temperatureC,
      power_w: gpu.powerW,
      driver_version: gpu.driverVersion,
      compute_capability: gpu.computeCap,
      pci_bus_id: gpu.pciBusId,
      mig: instances.length ? { instances } : null,
      per_worker_limit_bytes: limit,
      health: unhealthy ? ("unhealthy" as const) : ("ok" as const),
      health_reason: unhealthy,
    };
  });
}

export interface NvidiaDetection {
  devices: GpuDevice[];
  processes: GpuProcess[];
  status: "found" | "none" | "error";
  reason: string | null;
  /** Things worth one log line that do not stop detection (a field the driver lacks, a remap note). */
  notes: string[];
}

/**
 * Ask nvidia-smi. A missing tool is "none"; a failing or hanging one is "error" with its reason;
 * both mean no NVIDIA devices. A field the driver does not know is dropped and the query retried.
 */
export async function detectNvidia(
  run: ToolRunner,
  opts: { env: Record<string, string | undefined>; timeoutMs: number; firstId?: number },
): Promise<NvidiaDetection> {
  const notes: string[] = [];
  let fields: string[] = [...NVIDIA_QUERY_FIELDS];
  const ask = (args: string[]) => run(["nvidia-smi", ...args], { timeoutMs: opts.timeoutMs, env: opts.env });
  let result = await ask([`--query-gpu=${fields.join(",")}`, "--format=csv,noheader,nounits"]);
  for (let tries = 0; !result.ok && result.kind === "failed" && tries < OPTIONAL_FIELDS.length; tries++) {
    const bad = /Field "([^"]+)" is not a valid field to query/.exec(result.stdout + result.stderr)?.[1];
    if (!bad || !OPTIONAL_FIELDS.includes(bad as NvidiaField)) break;
    notes.push(`nvidia-smi does not know the field ${bad} (old driver); reported as null`);
    fields = fields.filter((f) => f !== bad);
    result = await ask([`--query-gpu=${fields.join(",")}`, "--format=csv,noheader,nounits"]);
  }
  if (!result.ok) {
    return { devices: [], processes: [], status: result.kind === "missing" ? "none" : "error", reason: result.reason, notes };
  }
  const { gpus, skipped } = parseNvidiaQuery(result.stdout, fields);
  if (skipped.length) notes.push(`nvidia-smi: ${skipped.length} line(s) not understood, e.g. "${skipped[0]!.slice(0, 120)}"`);
  if (gpus.length === 0) return { devices: [], processes: [], status: "none", reason: "nvidia-smi lists no GPU", notes };
  // MIG instances and per-process memory are extras: their failure costs detail, not the GPUs.
  const [list, apps] = await Promise.all([ask(["-L"]), ask(COMPUTE_APPS_ARGS)]);
  const migs = list.ok ? parseNvidiaList(list.stdout) : new Map<string, MigInstance[]>();
  if (!list.ok) notes.push(`nvidia-smi -L: ${list.reason}`);
  const processes = apps.ok ? parseComputeApps(apps.stdout) : [];
  if (!apps.ok) notes.push(`nvidia-smi --query-compute-apps: ${apps.reason}`);
  const { visible, note } = applyCudaVisibleDevices(gpus, migs, opts.env.CUDA_VISIBLE_DEVICES);
  if (note) notes.push(note);
  const names = new Set(visible.map((v) => v.gpu.name));
  if (names.size > 1 && opts.env.CUDA_DEVICE_ORDER !== "PCI_BUS_ID") {
    notes.push("GPUs of different models and CUDA_DEVICE_ORDER is not PCI_BUS_ID: CUDA may number them differently from nvidia-smi (set CUDA_DEVICE_ORDER=PCI_BUS_ID)");
  }
  const devices = nvidiaDevices(visible, migs, opts.firstId ?? 0);
  if (devices.length === 0) return { devices, processes: [], status: "none", reason: "CUDA_VISIBLE_DEVICES hides every GPU", notes };
  return { devices, processes, status: "found", reason: null, notes };
}
