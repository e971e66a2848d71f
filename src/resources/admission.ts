/**
 * The resources area's side of the spawn port (src/shared/spawn-admission.ts): the estimate from a
 * model's footprint, admission and release through the SpawnPreflight and its ledger, and every
 * admitted worker's real memory use after each device detection (for the worker records).
 */
import { isHiveError } from "../shared/errors.ts";
import type { Logger } from "../shared/logger.ts";
import type { ModelFootprint } from "../shared/model-source.ts";
import type { AdmissionRequest, AdoptRequest, SpawnAdmission } from "../shared/spawn-admission.ts";
import type { DeviceInventory } from "./device-inventory.ts";
import type { MemoryEstimate } from "./memory-estimate.ts";
import type { MemoryLedger } from "./memory-ledger.ts";
import type { ModelFootprints } from "./model-footprint.ts";
import type { SpawnPreflight } from "./preflight.ts";
import type { HostSnapshot } from "./types.ts";

type UsageListener = (usage: ReadonlyMap<string, number | null>) => void;

export class HostAdmission implements SpawnAdmission<MemoryEstimate> {
  private readonly listeners = new Set<UsageListener>();

  constructor(
    private readonly d: {
      inventory: Pick<DeviceInventory, "snapshot" | "onSnapshot">;
      preflight: SpawnPreflight;
      ledger: MemoryLedger;
      footprints: ModelFootprints;
      logger: Logger;
    },
  ) {
    d.inventory.onSnapshot((s) => this.publish(s));
  }

  async estimate(model: ModelFootprint, context?: number): Promise<MemoryEstimate> {
    return this.d.preflight.estimate(await this.d.footprints.shape(model), context);
  }

  async admit(req: AdmissionRequest<MemoryEstimate>): Promise<void> {
    await this.d.preflight.admit({ workerId: req.workerId, backend: req.backend, device: req.device, estimate: req.need, force: req.force });
  }

  async adopt(req: AdoptRequest): Promise<boolean> {
    try {
      await this.d.preflight.adopt({ workerId: req.workerId, backend: req.backend, device: req.device, bytes: req.estimateBytes, pid: req.pid });
      return true;
    } catch (e) {
      if (!isHiveError(e) || e.status !== 400) throw e;
      // Its GPU is gone (or renumbered): nothing on this host to count it against.
      this.d.logger.warn("adopted worker's device is not on this host; its memory is not counted", { worker_id: req.workerId, backend: req.backend, device: req.device, reason: e.message });
      return false;
    }
  }

  release(workerId: string): void {
    this.d.preflight.release(workerId);
  }

  attachPid(workerId: string, pid: number | null): void {
    this.d.preflight.attachPid(workerId, pid);
  }

  holds(workerId: string): boolean {
    return this.d.ledger.get(workerId) !== undefined;
  }

  onUsage(listener: UsageListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  refresh(): void {
    void this.d.inventory.snapshot();
  }

  /** Every admitted worker's real use as of this detection. */
  private publish(s: HostSnapshot): void {
    if (this.listeners.size === 0) return;
    const usageOf = this.d.preflight.usage(s);
    const usage = new Map(this.d.ledger.list().map((r) => [r.workerId, usageOf(r)] as const));
    for (const listener of this.listeners) listener(usage);
  }
}
