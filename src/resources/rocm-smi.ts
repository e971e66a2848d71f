/**
 * AMD GPUs through `rocm-smi --showmeminfo vram --showproductname --json`, numbered as HIP
 * numbers them after HIP_VISIBLE_DEVICES (or ROCR_VISIBLE_DEVICES) index lists.
 */
import type { ToolRunner } from "./tool-runner.ts";
import { toGiB, type GpuDevice } from "./types.ts";

export const ROCM_ARGS = ["--showmeminfo", "vram", "--showproductname", "--json"];

export interface AmdGpu {
  /** N of "cardN". */
  index: number;
  name: string;
  totalBytes: number | null;
  usedBytes: number | null;
  gfx: string | null;
}

/** Key lookup that survives rocm-smi's changes of capitalisation ("Card series" / "Card Series"). */
function field(entry: Record<string, unknown>, ...names: string[]): string | null {
  for (const name of names) {
    for (const [k, v] of Object.entries(entry)) {
      if (k.toLowerCase() === name.toLowerCase() && typeof v === "string" && v.trim() && !/^n\/a$/i.test(v.trim())) return v.trim();
    }
  }
  return null;
}

const bytes = (v: string | null) => (v !== null && /^\d+$/.test(v) ? Number(v) : null);

/** The JSON form: `{"card0":{"VRAM Total Memory (B)":"…","VRAM Total Used Memory (B)":"…","Card series":"…",…},…}`. */
export function parseRocmSmiJson(text: string): AmdGpu[] {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    throw new Error("rocm-smi did not print JSON");
  }
  if (!data || typeof data !== "object" || Array.isArray(data)) throw new Error("rocm-smi printed JSON that is not an object");
  const gpus: AmdGpu[] = [];
  for (const [key, value] of Object.entries(data as Record<string, unknown>)) {
    const card = /^card(\d+)$/.exec(key);
    if (!card || !value || typeof value !== "object") continue; // "system" and friends
    const entry = value as Record<string, unknown>;
    gpus.push({
      index: Number(card[1]),
      name: field(entry, "Card series", "Card SKU", "Device Name", "Card model") ?? `AMD GPU ${card[1]}`,
      totalBytes: bytes(field(entry, "VRAM Total Memory (B)")),
      usedBytes: bytes(field(entry, "VRAM Total Used Memory (B)")),
      gfx: field(entry, "GFX Version"),
    });
  }
  return gpus.sort((a, b) => a.index - b.index);
}

/** HIP_VISIBLE_DEVICES (else ROCR_VISIBLE_DEVICES): indices; the first unknown one ends the list. */
export function applyHipVisibleDevices(gpus: AmdGpu[], env: Record<string, string | undefined>): { visible: AmdGpu[]; note: string | null } {
  const name = env.HIP_VISIBLE_DEVICES !== undefined ? "HIP_VISIBLE_DEVICES" : env.ROCR_VISIBLE_DEVICES !== undefined ? "ROCR_VISIBLE_DEVICES" : null;
  if (!name) return { visible: gpus, note: null };
  const visible: AmdGpu[] = [];
  for (const entry of env[name]!.split(",").map((e) => e.trim())) {
    // Positions in the tool's list (rocm-smi's cardN order is the enumeration order).
    const gpu = /^\d+$/.test(entry) ? gpus[Number(entry)] : undefined;
    if (!gpu || visible.includes(gpu)) {
      return { visible, note: entry === "" && visible.length === 0 ? null : `${name}: "${entry}" names no GPU of this host; it and what follows are ignored` };
    }
    visible.push(gpu);
  }
  return { visible, note: null };
}

export function amdDevices(visible: AmdGpu[], firstId: number): GpuDevice[] {
  return visible.map((gpu, i) => {
    const total = gpu.totalBytes ?? 0;
    const free = gpu.totalBytes !== null && gpu.usedBytes !== null ? Math.max(0, gpu.totalBytes - gpu.usedBytes) : 0;
    const unhealthy = gpu.totalBytes === null ? "VRAM Total Memory is not reported" : null;
    return {
      id: `gpu${firstId + i}`,
      name: gpu.name,
      vram_gb: toGiB(total),
      backend: "rocm" as const,
      vendor: "amd" as const,
      index: i,
      physical_index: gpu.index,
      uuid: null,
      memory_total_bytes: total,
      memory_used_bytes: gpu.usedBytes,
      memory_free_bytes: free,
      unified_memory: false,
      utilization_percent: null,
      temperature_c: null,
      power_w: null,
      driver_version: null,
      compute_capability: gpu.gfx,
      pci_bus_id: null,
      mig: null,
      per_worker_limit_bytes: null,
      health: unhealthy ? ("unhealthy" as const) : ("ok" as const),
      health_reason: unhealthy,
    };
  });
}

export interface AmdDetection {
  devices: GpuDevice[];
  status: "found" | "none" | "error";
  reason: string | null;
  notes: string[];
}

export async function detectAmd(run: ToolRunner, opts: { env: Record<string, string | undefined>; timeoutMs: number; firstId: number }): Promise<AmdDetection> {
  const result = await run(["rocm-smi", ...ROCM_ARGS], { timeoutMs: opts.timeoutMs, env: opts.env });
  if (!result.ok) return { devices: [], status: result.kind === "missing" ? "none" : "error", reason: result.reason, notes: [] };
  let gpus: AmdGpu[];
  try {
    gpus = parseRocmSmiJson(result.stdout);
  } catch (e) {
    return { devices: [], status: "error", reason: (e as Error).message, notes: [] };
  }
  if (gpus.length === 0) return { devices: [], status: "none", reason: "rocm-smi lists no GPU", notes: [] };
  const { visible, note } = applyHipVisibleDevices(gpus, opts.env);
  const devices = amdDevices(visible, opts.firstId);
  const notes = note ? [note] : [];
  if (devices.length === 0) return { devices, status: "none", reason: "HIP_VISIBLE_DEVICES hides every GPU", notes };
  return { devices, status: "found", reason: null, notes };
}
