/**
 * The port through which the spawn path reserves memory for a worker. Workers depend on this file
 * only; the resources area implements it (src/resources/admission.ts), so neither side imports the
 * other.
 *
 * A worker is admitted once, before its process starts and before its model downloads, and holds
 * its reservation until it is gone for good: a restart (same worker id) keeps it, and every other
 * end (stop, exit without restart, crash loop, a failed download or launch, a spawn refused after
 * admission) releases it.
 */
import type { ModelFootprint } from "./model-source.ts";

/** What a worker is expected to take; the implementation's estimate carries more detail. */
export interface MemoryNeed {
  readonly total_bytes: number;
  /** The context the estimate is sized for: what the worker is told to run with (`{context}`). */
  readonly context_length: number;
}

export interface AdmissionRequest<Need extends MemoryNeed = MemoryNeed> {
  workerId: string;
  backend: string;
  device: number;
  need: Need;
  /** Admit without the fit check (logged); the memory still counts for later spawns. */
  force?: boolean;
}

/** A worker that already runs (adopted after a hive restart): its memory is counted, not checked. */
export interface AdoptRequest {
  workerId: string;
  backend: string;
  device: number;
  /** What it was admitted with (its record's `memory_estimate_bytes`). */
  estimateBytes: number;
  pid: number | null;
}

/** `Need` is whatever `estimate` returns: it travels back into `admit` unchanged. */
export interface SpawnAdmission<Need extends MemoryNeed = MemoryNeed> {
  /** The memory a model needs at `context` (absent: the model's own, capped by the config). */
  estimate(model: ModelFootprint, context?: number): Promise<Need>;
  /**
   * Check that the backend and the device exist and that the need fits, and reserve it, in one
   * step. Throws HiveError 400 BACKEND_UNAVAILABLE / UNKNOWN_DEVICE, 503 DEVICE_UNHEALTHY,
   * 507 INSUFFICIENT_VRAM / INSUFFICIENT_RAM.
   */
  admit(req: AdmissionRequest<Need>): Promise<void>;
  /** Reserve without the fit check; false (and a log line) when its device is not on this host now. */
  adopt(req: AdoptRequest): Promise<boolean>;
  /** Give the memory back. Idempotent. */
  release(workerId: string): void;
  /** The worker's process (group leader) runs, or ran (`null`): its real use is matched by it. */
  attachPid(workerId: string, pid: number | null): void;
  /** Whether the worker holds a reservation now. */
  holds(workerId: string): boolean;
  /**
   * Told, after each device detection, every admitted worker's real use (null while the device
   * does not report it). Returns the unsubscribe function.
   */
  onUsage(listener: (usage: ReadonlyMap<string, number | null>) => void): () => void;
  /** Ask for current numbers (a detection, unless a fresh one is cached); listeners get them. */
  refresh(): void;
}
