/**
 * Keeps `memory_used_bytes` of the worker records current from the device detections that run
 * anyway (spawns, the host routes): no tool runs of its own, no timer. A worker that gets ready
 * asks for one (served from the cache while fresh), as its model is in memory from then on.
 * Small changes are not written: a record changes only when the use moves by at least 1 % (or
 * appears, or goes), so a worker's resident memory breathing does not churn the registry.
 */
import type { HiveBus } from "../events.ts";
import type { SpawnAdmission } from "../shared/spawn-admission.ts";
import type { WorkerRegistry } from "./registry.ts";

/** Worth writing: it appeared, went, or moved by at least 1 %. */
export function memoryChanged(before: number | null, after: number | null): boolean {
  if (before === null || after === null) return before !== after;
  return Math.abs(after - before) >= Math.max(1, before / 100);
}

export function trackWorkerMemory(d: { admission: SpawnAdmission; registry: WorkerRegistry; bus: HiveBus }): () => void {
  const offUsage = d.admission.onUsage((usage) => {
    for (const [id, used] of usage) {
      const w = d.registry.live(id);
      if (w && memoryChanged(w.memory_used_bytes, used)) d.registry.update(id, { memory_used_bytes: used });
    }
  });
  const offReady = d.bus.on("ready", () => d.admission.refresh());
  return () => {
    offUsage();
    offReady();
  };
}
