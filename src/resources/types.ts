/**
 * What the hive knows about its host, as TypeBox schemas (shared with the routes): CPU, RAM, the
 * models dir's disk, GPUs with their memory, and how each detection went.
 */
import { Nullable, t, type Static } from "../shared/schema.ts";


/** Roadmap: GPU faults (XID, ECC, fell off the bus) will mark a device unhealthy; nothing is placed on it. */
export const DeviceHealth = t.Union([t.Literal("ok"), t.Literal("unhealthy")]);
export type DeviceHealth = Static<typeof DeviceHealth>;

export const GpuBackend = t.Union([t.Literal("cuda"), t.Literal("rocm"), t.Literal("metal")]);
export type GpuBackend = Static<typeof GpuBackend>;

export const MigInstance = t.Object({
  uuid: t.String(),
  profile: t.String({ description: 'e.g. "3g.40gb"' }),
  memory_bytes: t.Integer({ description: "from the profile name (GB), rounded down: a lower bound" }),
});
export type MigInstance = Static<typeof MigInstance>;

export const GpuDevice = t.Object({
  id: t.String({ description: '"gpu0", "gpu1", … in the order workers see them' }),
  name: t.String(),
  vram_gb: t.Number({ description: "total memory in GiB (2^30 bytes), two decimals" }),
  backend: GpuBackend,
  vendor: t.Union([t.Literal("nvidia"), t.Literal("amd"), t.Literal("apple")]),
  index: t.Integer({ description: "the device number a worker gets (`--device`), after CUDA_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES" }),
  physical_index: Nullable(t.Integer({ description: "the tool's own index (nvidia-smi, rocm-smi)" })),
  uuid: Nullable(t.String()),
  memory_total_bytes: t.Integer(),
  memory_used_bytes: Nullable(t.Integer()),
  memory_free_bytes: t.Integer(),
  unified_memory: t.Boolean({ description: "true for Apple Silicon: the GPU uses system RAM" }),
  utilization_percent: Nullable(t.Number()),
  temperature_c: Nullable(t.Number()),
  power_w: Nullable(t.Number()),
  driver_version: Nullable(t.String()),
  compute_capability: Nullable(t.String()),
  pci_bus_id: Nullable(t.String()),
  mig: Nullable(t.Object({ instances: t.Array(MigInstance) })),
  /** The most one worker may use on this device (a MIG instance), when less than the device. */
  per_worker_limit_bytes: Nullable(t.Integer()),
  health: DeviceHealth,
  health_reason: Nullable(t.String()),
});
export type GpuDevice = Static<typeof GpuDevice>;

export const GpuProcess = t.Object({
  pid: t.Integer(),
  gpu_uuid: t.String(),
  used_bytes: t.Integer(),
});
export type GpuProcess = Static<typeof GpuProcess>;

export const DetectionStatus = t.Object({
  /** found: devices listed; none: the tool is absent or lists nothing; error: it failed (reason says how). */
  status: t.Union([t.Literal("found"), t.Literal("none"), t.Literal("error"), t.Literal("skipped")]),
  reason: Nullable(t.String()),
});
export type DetectionStatus = Static<typeof DetectionStatus>;

export const HostSnapshot = t.Object({
  taken_at: t.Integer({ description: "unix ms" }),
  cpu: t.Object({ cores: t.Integer(), model: t.String(), arch: t.String() }),
  memory: t.Object({ total_bytes: t.Integer(), available_bytes: t.Integer(), source: t.String() }),
  disk: Nullable(t.Object({ path: t.String(), total_bytes: t.Integer(), available_bytes: t.Integer() })),
  gpus: t.Array(GpuDevice),
  processes: t.Array(GpuProcess),
  detection: t.Object({ nvidia: DetectionStatus, rocm: DetectionStatus, apple: DetectionStatus }),
});
export type HostSnapshot = Static<typeof HostSnapshot>;

export const GIB = 1024 ** 3;
export const MIB = 1024 ** 2;
/** Bytes → GiB with two decimals (the `*_gb` fields queen-rbee reads). */
export const toGiB = (bytes: number) => Math.round((bytes / GIB) * 100) / 100;
