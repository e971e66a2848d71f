/**
 * MemoryLedger: which worker holds how much of which memory pool (a GPU's VRAM by its uuid, or
 * the host's RAM, which Apple's GPU shares). Checking and taking a reservation is one synchronous
 * step, so two spawns racing each other can never both count the same free memory.
 *
 * What a worker counts for, beyond what the device already reports as used, is the part of its
 * estimate the device does not show yet: max(0, estimate − its real use), real use 0 when not
 * reported. In total each worker counts max(estimate, real use).
 */
export interface Reservation {
  workerId: string;
  /** "gpu0", "cpu", … */
  deviceId: string;
  /** The physical memory: "gpu:<uuid>" or "ram". */
  pool: string;
  /** The estimate the worker was admitted with. */
  bytes: number;
  /** Admitted without the check (`"force": true`). */
  forced: boolean;
  /** The worker's process (group leader), once it runs: its real use is looked up by it. */
  pid: number | null;
  /** Clock ms when taken. */
  at: number;
}

/** Real use of a reservation's process in its pool, in bytes; null when the device does not say. */
export type UsageOf = (r: Reservation) => number | null;

export const pendingBytes = (r: Reservation, used: number | null) => Math.max(0, r.bytes - (used ?? 0));

export interface Budget {
  /** What the device reports free now. */
  free_bytes: number;
  /** Kept free for the host / driver (resources.gpu_reserve_mb or ram_reserve_mb). */
  reserve_bytes: number;
  /** Admitted workers' estimates not yet visible in free_bytes. */
  reserved_bytes: number;
  /** free − reserve − reserved (negative when over-committed). */
  available_bytes: number;
  /** The most one worker may take here (a MIG instance), else null. */
  per_worker_limit_bytes: number | null;
  /** Workers holding reservations in this pool. */
  workers: string[];
}

export function budgetOf(o: { freeBytes: number; reserveBytes: number; perWorkerLimit: number | null; holders: Reservation[]; usageOf: UsageOf }): Budget {
  const reserved = o.holders.reduce((s, r) => s + pendingBytes(r, o.usageOf(r)), 0);
  return {
    free_bytes: o.freeBytes,
    reserve_bytes: o.reserveBytes,
    reserved_bytes: reserved,
    available_bytes: o.freeBytes - o.reserveBytes - reserved,
    per_worker_limit_bytes: o.perWorkerLimit,
    workers: o.holders.map((r) => r.workerId),
  };
}

export const fitsIn = (needed: number, b: Budget) => needed <= b.available_bytes && (b.per_worker_limit_bytes === null || needed <= b.per_worker_limit_bytes);

export class MemoryLedger {
  private readonly byWorker = new Map<string, Reservation>();

  /**
   * Check and take in one step. `check` sees the other holders of the pool (this worker's own
   * earlier reservation is left out: a restart re-admits itself) and decides; when it admits, the
   * reservation is recorded before anything else can run.
   */
  take<C extends { admit: boolean }>(req: Omit<Reservation, "pid"> & { pid?: number | null }, check: (holders: Reservation[]) => C): C & { reservation: Reservation | null } {
    const holders = this.inPool(req.pool).filter((r) => r.workerId !== req.workerId);
    const decision = check(holders);
    if (!decision.admit) return { ...decision, reservation: null };
    const reservation: Reservation = { ...req, pid: req.pid ?? this.byWorker.get(req.workerId)?.pid ?? null };
    this.byWorker.set(req.workerId, reservation);
    return { ...decision, reservation };
  }

  /** Give the memory back (stop, crash, load failure, refused spawn). Idempotent. */
  release(workerId: string): Reservation | undefined {
    const r = this.byWorker.get(workerId);
    this.byWorker.delete(workerId);
    return r;
  }

  /** The worker's process started: from now on its real use can be matched. */
  attachPid(workerId: string, pid: number | null): void {
    const r = this.byWorker.get(workerId);
    if (r) this.byWorker.set(workerId, { ...r, pid });
  }

  get(workerId: string): Reservation | undefined {
    return this.byWorker.get(workerId);
  }

  list(): Reservation[] {
    return [...this.byWorker.values()];
  }

  inPool(pool: string): Reservation[] {
    return this.list().filter((r) => r.pool === pool);
  }
}

export interface EvictionCandidate {
  workerId: string;
  /** What stopping it gives back: max(estimate, real use). */
  freesBytes: number;
  /** Clock ms of its last request; the least recently used go first. */
  lastUsedAt: number;
  /** A worker with requests in flight is never chosen. */
  busy: boolean;
}

/**
 * "What would free enough memory?" for the roadmap's eviction: idle workers, least recently used
 * first, until `shortfallBytes` is covered. Pure: it only answers.
 */
export function planEviction(shortfallBytes: number, candidates: EvictionCandidate[]): { workerIds: string[]; freed_bytes: number; enough: boolean } {
  const workerIds: string[] = [];
  let freed = 0;
  const order = candidates.filter((c) => !c.busy).sort((a, b) => a.lastUsedAt - b.lastUsedAt || a.workerId.localeCompare(b.workerId));
  for (const c of order) {
    if (freed >= shortfallBytes) break;
    workerIds.push(c.workerId);
    freed += c.freesBytes;
  }
  return { workerIds, freed_bytes: freed, enough: freed >= shortfallBytes };
}

/** Candidates of a pool from the ledger; `activity` says when each worker was last used and whether it is busy. */
export function evictionCandidates(holders: Reservation[], usageOf: UsageOf, activity: (workerId: string) => { lastUsedAt: number; busy: boolean }): EvictionCandidate[] {
  return holders.map((r) => ({ workerId: r.workerId, freesBytes: Math.max(r.bytes, usageOf(r) ?? 0), ...activity(r.workerId) }));
}
