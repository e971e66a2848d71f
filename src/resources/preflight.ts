/**
 * Spawn preflight: before any process starts (and before any download begins) a spawn must name a
 * backend this host has, a device that exists, and a model whose estimate fits that device's free
 * memory minus the reserve minus what admitted workers are still expected to take. Admission takes
 * a reservation in the MemoryLedger in the same synchronous step as the check.
 *
 * Errors (HiveError): 400 BACKEND_UNAVAILABLE, 400 UNKNOWN_DEVICE (both list the devices that
 * exist), 503 DEVICE_UNHEALTHY, 507 INSUFFICIENT_VRAM / INSUFFICIENT_RAM with the numbers.
 * `force` admits without the check (logged); the reservation is still taken so later spawns count it.
 */
import { readFileSync } from "node:fs";
import type { HiveConfig } from "../config.ts";
import type { Clock } from "../shared/clock.ts";
import { systemClock } from "../shared/clock.ts";
import { HiveError } from "../shared/errors.ts";
import type { Logger } from "../shared/logger.ts";
import { readProcStat } from "../shared/proc-stat.ts";
import { devicesByBackend } from "./backends.ts";
import { budgetOf, fitsIn, type Budget, type MemoryLedger, type Reservation, type UsageOf } from "./memory-ledger.ts";
import { estimateMemory, type MemoryEstimate, type ModelShape } from "./memory-estimate.ts";
import { GIB, MIB, type DeviceHealth, type HostSnapshot } from "./types.ts";

export interface ResourceSettings {
  gpuReserveBytes: number;
  ramReserveBytes: number;
  overheadBytes: number;
  contextCap: number;
}

export function resourceSettings(config: HiveConfig): ResourceSettings {
  const r = config.resources;
  return { gpuReserveBytes: r.gpu_reserve_mb * MIB, ramReserveBytes: r.ram_reserve_mb * MIB, overheadBytes: r.overhead_mb * MIB, contextCap: r.context_cap };
}

/** Where a worker would go: a GPU, or the host's RAM for `cpu`. */
export interface Placement {
  id: string;
  backend: string;
  index: number;
  name: string;
  /** "gpu:<uuid>" for a discrete GPU, "ram" for cpu and for unified memory. */
  pool: string;
  memory: "vram" | "ram";
  freeBytes: number;
  perWorkerLimit: number | null;
  health: DeviceHealth;
  healthReason: string | null;
}

const gib = (bytes: number) => `${(bytes / GIB).toFixed(2)} GiB`;

/** Every place a worker can go on this host, cpu first. */
export function placements(s: HostSnapshot): Placement[] {
  const cpu: Placement = {
    id: "cpu", backend: "cpu", index: 0, name: s.cpu.model, pool: "ram", memory: "ram",
    freeBytes: s.memory.available_bytes, perWorkerLimit: null, health: "ok", healthReason: null,
  };
  return [
    cpu,
    ...s.gpus.map((g): Placement => ({
      id: g.id,
      backend: g.backend,
      index: g.index,
      name: g.name,
      pool: g.unified_memory ? "ram" : `gpu:${g.uuid ?? `${g.vendor}:${g.physical_index ?? g.index}`}`,
      memory: g.unified_memory ? "ram" : "vram",
      freeBytes: g.memory_free_bytes,
      perWorkerLimit: g.per_worker_limit_bytes,
      health: g.health,
      healthReason: g.health_reason,
    })),
  ];
}

const deviceList = (s: HostSnapshot) => placements(s).map((p) => ({ id: p.id, backend: p.backend, index: p.index, name: p.name }));
const deviceWords = (s: HostSnapshot) => placements(s).map((p) => `${p.id} (${p.backend} ${p.index}: ${p.name})`).join(", ");

/** The placement a spawn's (backend, device index) names, or the 400 that says what exists. */
export function placementFor(s: HostSnapshot, backend: string, index: number): Placement {
  const byBackend = devicesByBackend(s);
  if (!byBackend.has(backend)) {
    const available = [...byBackend.keys()];
    throw new HiveError(400, "BACKEND_UNAVAILABLE", `backend "${backend}" is not available on this host (available: ${available.join(", ")}); devices: ${deviceWords(s)}`, {
      backend, available_backends: available, devices: deviceList(s),
    });
  }
  const found = placements(s).find((p) => p.backend === backend && p.index === index);
  if (!found) {
    throw new HiveError(400, "UNKNOWN_DEVICE", `backend "${backend}" has no device ${index} on this host; devices: ${deviceWords(s)}`, {
      backend, device: index, devices: deviceList(s),
    });
  }
  return found;
}

/** The placement a device id ("gpu0", "cpu") names, or 400 UNKNOWN_DEVICE. */
export function placementById(s: HostSnapshot, id: string): Placement {
  const found = placements(s).find((p) => p.id === id);
  if (!found) throw new HiveError(400, "UNKNOWN_DEVICE", `no device "${id}" on this host; devices: ${deviceWords(s)}`, { device: id, devices: deviceList(s) });
  return found;
}

export interface FitAnswer {
  admit: boolean;
  fits: boolean;
  device: Placement;
  budget: Budget;
  needed: number;
}

export interface PreflightDeps {
  inventory: { snapshot(): Promise<HostSnapshot> };
  ledger: MemoryLedger;
  settings: ResourceSettings;
  logger: Logger;
  clock?: Clock;
  /** Resident anonymous memory of a process (RAM it really took), null when unknown. */
  ramUseOf?: (pid: number) => number | null;
  /** Process group of a pid (a worker leads its own group), null when unknown. */
  groupOf?: (pid: number) => number | null;
}

export interface AdmitRequest {
  workerId: string;
  backend: string;
  device: number;
  estimate: MemoryEstimate;
  force?: boolean;
}

/** Linux: /proc/<pid>/status RssAnon (file-backed pages such as mmapped weights stay countable as cache). */
export function procRamUse(pid: number): number | null {
  try {
    const kb = /^RssAnon:\s+(\d+)\s*kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
    return kb === undefined ? null : Number(kb) * 1024;
  } catch {
    return null;
  }
}

/** Linux: the process group of a pid (its /proc/<pid>/stat), null when it is gone. */
export const procGroupOf = (pid: number): number | null => readProcStat(pid)?.pgrp ?? null;

export class SpawnPreflight {
  private readonly clock: Clock;
  private readonly ramUseOf: (pid: number) => number | null;
  private readonly groupOf: (pid: number) => number | null;

  constructor(private readonly d: PreflightDeps) {
    this.clock = d.clock ?? systemClock;
    this.ramUseOf = d.ramUseOf ?? procRamUse;
    this.groupOf = d.groupOf ?? procGroupOf;
  }

  /** The estimate for a model shape under this host's settings. */
  estimate(shape: ModelShape, context?: number): MemoryEstimate {
    return estimateMemory(shape, { context, contextCap: this.d.settings.contextCap, overheadBytes: this.d.settings.overheadBytes });
  }

  /**
   * Real use per reservation, read now: GPU pools from the snapshot's per-process list (the
   * worker's pid or any process of its group), RAM from the process itself. Reservations taken
   * after this was built count with their whole estimate.
   */
  usage(s: HostSnapshot): UsageOf {
    const used = new Map<string, number | null>();
    // One /proc read per GPU process at most, however many workers are matched against it.
    const groups = new Map<number, number | null>();
    const groupOf = (pid: number) => {
      if (!groups.has(pid)) groups.set(pid, this.groupOf(pid));
      return groups.get(pid)!;
    };
    for (const r of this.d.ledger.list()) {
      if (r.pid === null) continue;
      if (r.pool === "ram") {
        used.set(r.workerId, this.ramUseOf(r.pid));
        continue;
      }
      const uuid = r.pool.slice("gpu:".length);
      const mine = s.processes.filter((p) => p.gpu_uuid === uuid && (p.pid === r.pid || groupOf(p.pid) === r.pid));
      used.set(r.workerId, mine.length ? mine.reduce((sum, p) => sum + p.used_bytes, 0) : null);
    }
    return (r) => (r.pid === null ? null : (used.get(r.workerId) ?? null));
  }

  private budget(p: Placement, holders: Reservation[], usageOf: UsageOf): Budget {
    const reserve = p.memory === "ram" ? this.d.settings.ramReserveBytes : this.d.settings.gpuReserveBytes;
    return budgetOf({ freeBytes: p.freeBytes, reserveBytes: reserve, perWorkerLimit: p.perWorkerLimit, holders, usageOf });
  }

  /** Admit a spawn and hold its memory, or throw the refusal. */
  async admit(req: AdmitRequest): Promise<{ reservation: Reservation; device: Placement; budget: Budget; forced: boolean }> {
    const s = await this.d.inventory.snapshot();
    const device = placementFor(s, req.backend, req.device);
    const force = req.force === true;
    if (device.health !== "ok" && !force) {
      throw unhealthy(503, device);
    }
    const usageOf = this.usage(s);
    const needed = req.estimate.total_bytes;
    // Check and take in one synchronous step: no other spawn runs between them.
    const answer = this.d.ledger.take({ workerId: req.workerId, deviceId: device.id, pool: device.pool, bytes: needed, forced: force, at: this.clock.now() }, (holders) => {
      const budget = this.budget(device, holders, usageOf);
      const fits = fitsIn(needed, budget);
      return { admit: fits || force, fits, budget };
    });
    if (!answer.reservation) throw refusal(507, device, needed, answer.budget, req.estimate);
    if (!answer.fits) {
      this.d.logger.warn("spawn admitted without the memory check (force)", {
        worker_id: req.workerId, device: device.id, needed_bytes: needed, available_bytes: answer.budget.available_bytes, health: device.health,
      });
    }
    return { reservation: answer.reservation, device, budget: answer.budget, forced: !answer.fits };
  }

  /** Would a model with this estimate fit on `deviceId` now? Takes nothing. */
  async capacity(deviceId: string, estimate: MemoryEstimate): Promise<FitAnswer> {
    const s = await this.d.inventory.snapshot();
    const device = placementById(s, deviceId);
    const budget = this.budget(device, this.d.ledger.inPool(device.pool), this.usage(s));
    const fits = device.health === "ok" && fitsIn(estimate.total_bytes, budget);
    return { admit: fits, fits, device, budget, needed: estimate.total_bytes };
  }

  /** The 409 body of a capacity answer that does not fit. */
  capacityRefusal(a: FitAnswer, estimate: MemoryEstimate): HiveError {
    if (a.device.health !== "ok") {
      return unhealthy(409, a.device);
    }
    return refusal(409, a.device, a.needed, a.budget, estimate);
  }

  /**
   * Count a worker that already runs (adopted after a hive restart) without the fit check: it
   * holds its memory whatever the device says now. Throws the 400s when its device is gone.
   */
  async adopt(req: { workerId: string; backend: string; device: number; bytes: number; pid: number | null }): Promise<Reservation> {
    const device = placementFor(await this.d.inventory.snapshot(), req.backend, req.device);
    const taken = this.d.ledger.take(
      { workerId: req.workerId, deviceId: device.id, pool: device.pool, bytes: req.bytes, forced: false, at: this.clock.now(), pid: req.pid },
      () => ({ admit: true }),
    );
    return taken.reservation!;
  }

  release(workerId: string): Reservation | undefined {
    return this.d.ledger.release(workerId);
  }

  attachPid(workerId: string, pid: number | null): void {
    this.d.ledger.attachPid(workerId, pid);
  }

  /** What a worker was admitted with and, where the device says, what it really uses (for its record). */
  async workerMemory(workerId: string): Promise<{ device: string; estimate_bytes: number; used_bytes: number | null } | null> {
    const r = this.d.ledger.get(workerId);
    if (!r) return null;
    const used = this.usage(await this.d.inventory.snapshot())(r);
    return { device: r.deviceId, estimate_bytes: r.bytes, used_bytes: used };
  }

  /** Per device: its budget now (for /v1/devices and /v1/resources). */
  budgets(s: HostSnapshot): Map<string, Budget> {
    const usageOf = this.usage(s);
    return new Map(placements(s).map((p) => [p.id, this.budget(p, this.d.ledger.inPool(p.pool), usageOf)]));
  }
}

/** DEVICE_UNHEALTHY: 503 for a spawn, 409 for a capacity question. */
function unhealthy(status: 409 | 503, device: Placement): HiveError {
  return new HiveError(status, "DEVICE_UNHEALTHY", `${device.id} (${device.name}) is unhealthy: ${device.healthReason}`, { device: device.id, reason: device.healthReason });
}

function refusal(status: 409 | 507, device: Placement, needed: number, b: Budget, estimate: MemoryEstimate): HiveError {
  const code = device.memory === "vram" ? "INSUFFICIENT_VRAM" : "INSUFFICIENT_RAM";
  const what = device.memory === "vram" ? "GPU memory" : "RAM";
  const others = b.workers.length;
  const limit = b.per_worker_limit_bytes !== null && needed > b.per_worker_limit_bytes ? `; one worker may use at most ${gib(b.per_worker_limit_bytes)} here (MIG instance)` : "";
  return new HiveError(
    status,
    code,
    `not enough ${what} on ${device.id} (${device.name}): the model needs ${gib(needed)}; ${gib(b.free_bytes)} free, ${gib(b.reserve_bytes)} kept in reserve, ${gib(b.reserved_bytes)} reserved for ${others} other worker${others === 1 ? "" : "s"}: ${gib(Math.max(0, b.available_bytes))} available${limit}`,
    {
      device: device.id,
      backend: device.backend,
      needed_bytes: needed,
      free_bytes: b.free_bytes,
      reserve_bytes: b.reserve_bytes,
      reserved_bytes: b.reserved_bytes,
      available_bytes: b.available_bytes,
      per_worker_limit_bytes: b.per_worker_limit_bytes,
      workers: b.workers,
      estimate,
    },
  );
}
