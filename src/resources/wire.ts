/**
 * The answers of the host routes, as queen-rbee reads them (protocol §6: the upstream fields keep
 * their names; the hive adds detail beside them), and the pure functions that build them.
 */
import { t, type Static } from "../shared/schema.ts";
import type { Budget } from "./memory-ledger.ts";
import { DetectionStatus, GpuDevice, toGiB, type HostSnapshot } from "./types.ts";

const Placed = {
  reserved_bytes: t.Integer({ description: "admitted workers' estimates the device does not show as used yet" }),
  available_bytes: t.Integer({ description: "free − reserve − reserved: what a new worker may take (negative when over-committed)" }),
  workers: t.Array(t.String(), { description: "workers holding memory here" }),
};

export const DeviceList = t.Object({
  cpu: t.Object({
    cores: t.Integer(),
    ram_gb: t.Number({ description: "total RAM, GiB" }),
    model: t.String(),
    arch: t.String(),
    ram_total_bytes: t.Integer(),
    ram_available_bytes: t.Integer(),
    ...Placed,
  }),
  gpus: t.Array(t.Composite([GpuDevice, t.Object(Placed)])),
  models: t.Integer({ description: "models in the catalog" }),
  workers: t.Integer({ description: "live workers" }),
  detection: t.Object({ nvidia: DetectionStatus, rocm: DetectionStatus, apple: DetectionStatus }),
  taken_at: t.Integer({ description: "unix ms of the detection this answer comes from" }),
});
export type DeviceList = Static<typeof DeviceList>;

export const HostResources = t.Object({
  ram_total_gb: t.Number(),
  ram_available_gb: t.Number(),
  disk_total_gb: t.Number({ description: "the filesystem of the models dir" }),
  disk_available_gb: t.Number(),
  ram_total_bytes: t.Integer(),
  ram_available_bytes: t.Integer(),
  disk_total_bytes: t.Integer(),
  disk_available_bytes: t.Integer(),
  disk_path: t.Union([t.String(), t.Null()], { description: "where the disk numbers were read (the models dir or its nearest existing parent)" }),
  cpu: t.Object({ cores: t.Integer(), model: t.String(), arch: t.String() }),
  gpus: t.Array(
    t.Object({
      id: t.String(),
      name: t.String(),
      backend: t.String(),
      vram_total_gb: t.Number(),
      vram_free_gb: t.Number(),
      memory_total_bytes: t.Integer(),
      memory_free_bytes: t.Integer(),
      health: t.String(),
      ...Placed,
    }),
  ),
  taken_at: t.Integer(),
});
export type HostResources = Static<typeof HostResources>;

const EMPTY: Budget = { free_bytes: 0, reserve_bytes: 0, reserved_bytes: 0, available_bytes: 0, per_worker_limit_bytes: null, workers: [] };
const placed = (b: Budget | undefined) => {
  const x = b ?? EMPTY;
  return { reserved_bytes: x.reserved_bytes, available_bytes: x.available_bytes, workers: x.workers };
};

export function deviceList(s: HostSnapshot, budgets: Map<string, Budget>, counts: { models: number; workers: number }): DeviceList {
  return {
    cpu: {
      cores: s.cpu.cores,
      ram_gb: toGiB(s.memory.total_bytes),
      model: s.cpu.model,
      arch: s.cpu.arch,
      ram_total_bytes: s.memory.total_bytes,
      ram_available_bytes: s.memory.available_bytes,
      ...placed(budgets.get("cpu")),
    },
    gpus: s.gpus.map((g) => ({ ...g, ...placed(budgets.get(g.id)) })),
    models: counts.models,
    workers: counts.workers,
    detection: s.detection,
    taken_at: s.taken_at,
  };
}

export function hostResources(s: HostSnapshot, budgets: Map<string, Budget>): HostResources {
  return {
    ram_total_gb: toGiB(s.memory.total_bytes),
    ram_available_gb: toGiB(s.memory.available_bytes),
    disk_total_gb: toGiB(s.disk?.total_bytes ?? 0),
    disk_available_gb: toGiB(s.disk?.available_bytes ?? 0),
    ram_total_bytes: s.memory.total_bytes,
    ram_available_bytes: s.memory.available_bytes,
    disk_total_bytes: s.disk?.total_bytes ?? 0,
    disk_available_bytes: s.disk?.available_bytes ?? 0,
    disk_path: s.disk?.path ?? null,
    cpu: s.cpu,
    gpus: s.gpus.map((g) => ({
      id: g.id,
      name: g.name,
      backend: g.backend,
      vram_total_gb: toGiB(g.memory_total_bytes),
      vram_free_gb: toGiB(g.memory_free_bytes),
      memory_total_bytes: g.memory_total_bytes,
      memory_free_bytes: g.memory_free_bytes,
      health: g.health,
      ...placed(budgets.get(g.id)),
    })),
    taken_at: s.taken_at,
  };
}
