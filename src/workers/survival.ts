/**
 * The lifecycle's side of surviving a restart of the hive (adoption.ts decides who is what):
 *   adopt       a worker process a previous hive left running: same id, url, port, state and
 *               counters; monitored, restarted and stopped like any other; its exit is noticed
 *               without being its parent (daemon-lifecycle.ts adoptProcess);
 *   restore     a saved worker without a process (waiting for its download, for a restart, or
 *               parked in crash_loop): it continues where it was;
 *   reportGone  a saved worker whose process is gone: only its final record, readable for a while;
 *   detachAll   the keep-workers exit policy: let every worker go, running and saved, for the next
 *               hive to adopt;
 * and the tally behind the shutdown's summary line.
 */
import { resolveProfile, type WorkerProfile } from "../config.ts";
import { adoptProcess, type SupervisedChild } from "../shared/daemon-lifecycle.ts";
import { errorMessage } from "../shared/errors.ts";
import type { ExitHandler } from "./exit-handler.ts";
import { cancelRestartTimer, endLoading, newWorkerEntry, type LifecycleDeps, type WorkerEntry, type WorkerTable } from "./lifecycle-context.ts";
import type { WorkerReadiness } from "./readiness.ts";
import type { WorkerExit, WorkerInfo } from "./schemas.ts";
import { binaryFor } from "./worker-binary.ts";
import { workerLogFile, type WorkerLauncher } from "./worker-launcher.ts";

/** The process of a saved worker that was found running as the same process (adoption.ts). */
export interface AdoptedProcess {
  pid: number;
  pgid: number;
  startTime: string;
}

export interface SurvivalParts {
  launcher: WorkerLauncher;
  exits: ExitHandler;
  readiness: WorkerReadiness;
  /** The worker could not start (its download failed): final record, memory and port released. */
  failBeforeStart: (id: string, entry: WorkerEntry, message: string) => void;
}

export class WorkerSurvival {
  constructor(
    private readonly d: LifecycleDeps,
    private readonly table: WorkerTable,
    private readonly parts: SurvivalParts,
  ) {}

  adopt(record: WorkerInfo, proc: AdoptedProcess): SupervisedChild {
    const id = record.id;
    const entry = this.entryFor(record);
    entry.modelPath = record.model_path;
    entry.launchedAt = this.d.clock.monotonic();
    const child = adoptProcess({
      id,
      pid: proc.pid,
      pgid: proc.pgid,
      startTime: proc.startTime,
      logFile: workerLogFile(this.d.logsDir, id),
      ringLines: this.d.config.workers.log_ring_lines,
      echo: this.d.echo,
      onOutput: () => entry.deadline?.touch(),
    });
    entry.child = child;
    this.d.ports.hold(record.port);
    this.table.entries.set(id, entry);
    // Nothing is in flight through a hive that just started: the saved activity is history.
    const activity = record.state === "loading" ? { in_flight: 0 } : { in_flight: 0, state: "idle" as const, slots_available: record.slots_total };
    this.d.registry.add({ ...record, ...activity, pid: proc.pid });
    entry.exitHandled = child.exited.then((exit) => this.parts.exits.handleExit(id, entry, child, exit));
    this.countMemory(record, proc.pid);
    if (record.state === "loading") {
      entry.deadline = this.parts.launcher.loadDeadline(id, entry);
      this.parts.readiness.watchAdopted(id, entry);
    } else {
      this.d.restartPolicy.markHealthy(entry.history, this.d.clock.monotonic());
    }
    const w = this.d.registry.live(id)!;
    this.d.bus.publish("adopted", { worker_id: id, pid: proc.pid, port: w.port, url: w.url, state: w.state, phase: w.phase, restart_count: w.restart_count });
    this.d.logger.info("worker adopted", { worker_id: id, pid: proc.pid, port: w.port, state: w.state, phase: w.phase });
    return child;
  }

  /**
   * A saved worker without a process. `model` is where its model will be (its download, resumed);
   * "parked": a crash_loop worker stays parked until an operator acts.
   */
  restore(record: WorkerInfo, model: Promise<string> | "parked"): void {
    const id = record.id;
    const entry = this.entryFor(record);
    entry.modelPath = record.model_path;
    entry.portHeld = false; // relaunch() takes a port again (its old one if free)
    this.table.entries.set(id, entry);
    this.d.registry.add({ ...record, pid: null });
    this.d.bus.publish("restored", { worker_id: id, phase: record.phase, download_id: record.download_id });
    this.d.logger.info("worker restored", { worker_id: id, phase: record.phase, download_id: record.download_id });
    if (model === "parked") return;
    this.countMemory(record, null);
    const wasRestarting = record.phase === "restarting";
    model.then(
      (path) => {
        if (!this.table.mayContinue(id, entry)) return;
        entry.modelPath = path;
        this.parts.exits.relaunch(id, entry, { countAsRestart: wasRestarting });
      },
      (e) => {
        if (this.table.entries.get(id) === entry) this.parts.failBeforeStart(id, entry, `model download failed: ${errorMessage(e)}`);
      },
    );
  }

  /** A saved worker that is gone: its final record (readable for exited_retention_s), an `exited` event. */
  reportGone(record: WorkerInfo, exit: WorkerExit): void {
    const id = record.id;
    this.d.registry.add({ ...record, pid: null });
    this.d.registry.recordExit(id, exit);
    this.d.registry.retire(id);
    this.d.bus.publish("exited", { worker_id: id, reason: exit.reason, code: exit.code, signal: exit.signal, message: exit.message });
    this.d.logger.warn("worker from before the restart is gone", { worker_id: id, reason: exit.reason, why: exit.message });
  }

  /**
   * keep_workers_on_exit: stop watching every worker and leave it running, its saved row intact
   * (nothing is retired); a late exit or download completion finds no entry to act on.
   * Returns how many workers were left (with or without a process).
   */
  detachAll(): number {
    this.table.shuttingDown = true;
    const kept = this.table.entries.size;
    for (const entry of this.table.entries.values()) {
      cancelRestartTimer(this.d.clock, entry);
      endLoading(entry);
      const child = entry.child;
      entry.child = null;
      child?.detach?.();
    }
    this.table.entries.clear();
    return kept;
  }

  /** The worker's memory counts again (checked at its spawn already, so never refused now). */
  private countMemory(record: WorkerInfo, pid: number | null): void {
    const estimate = (record as { memory_estimate_bytes?: number | null }).memory_estimate_bytes;
    if (typeof estimate !== "number") return;
    void this.d.admission
      .adopt({ workerId: record.id, backend: record.backend, device: record.device, estimateBytes: estimate, pid })
      .catch((e) => this.d.logger.warn("could not count an adopted worker's memory", { worker_id: record.id, err: errorMessage(e) }));
  }

  /** Profile and binary as the config says now; a profile that is gone falls back to the default one. */
  private entryFor(record: WorkerInfo): WorkerEntry {
    const cfg = this.d.config;
    let profileName = record.profile;
    let profile: WorkerProfile | undefined = resolveProfile(cfg, profileName);
    if (!profile) {
      this.d.logger.warn("an adopted worker's profile is no longer configured; using the default profile", { worker_id: record.id, profile: profileName });
      profileName = cfg.workers.default_profile;
      profile = resolveProfile(cfg, profileName)!;
    }
    let binary: string;
    try {
      binary = binaryFor(cfg, profileName, profile);
    } catch {
      binary = profile.binary; // needed only for a relaunch, which then fails as spawn_failed
    }
    return newWorkerEntry(profileName, profile, binary);
  }
}

/** How the workers ended at shutdown, for the summary line: stopped within the grace, SIGKILLed, left running. */
export class ShutdownTally {
  private children: SupervisedChild[] = [];
  private readonly killed = new Set<SupervisedChild>();
  total = 0;
  kept = 0;

  /** Shutdown stops these workers (with their processes, where they have one). */
  stopping(entries: Iterable<WorkerEntry>): void {
    for (const e of entries) {
      this.total++;
      if (e.child) this.children.push(e.child);
    }
  }

  /** The bound was exceeded (or a second signal): these are SIGKILLed now. */
  forcing(entries: Iterable<WorkerEntry>): void {
    for (const e of entries) if (e.child && !e.child.exit) this.killed.add(e.child);
  }

  summary(): { workers_total: number; graceful: number; forced: number; kept: number } {
    const forced = this.children.filter((c) => this.killed.has(c) || c.exit?.forced).length;
    return { workers_total: this.total, graceful: this.total - forced - this.kept, forced, kept: this.kept };
  }
}
