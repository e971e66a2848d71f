/**
 * After a worker process ends: the exit is classified and kept with its stderr tail, then one of
 *   - gone for good: stopped on request, during shutdown, or the policy says no restart (its
 *     memory reservation is released; a restart keeps it);
 *   - relaunch at once on another port: it could not bind its port (bounded, no backoff);
 *   - restart after a backoff (same id, same port if free), as the restart policy decides;
 *   - crash_loop: the policy's breaker opened; parked until an operator asks for a restart.
 */
import type { ChildExit, SupervisedChild } from "../shared/daemon-lifecycle.ts";
import { errorMessage } from "../shared/errors.ts";
import { toSystemTime } from "../shared/rbee-types.ts";
import { exitRecord, PORT_CONFLICT_TAIL_LINES, spawnFailure, STDERR_TAIL_LINES } from "./exit-forensics.ts";
import { endLoading, releasePort, type LifecycleDeps, type WorkerEntry, type WorkerTable } from "./lifecycle-context.ts";
import type { WorkerSnapshot } from "./registry.ts";
import type { RestartDecision } from "./restart.ts";
import type { ExitReason, WorkerExit } from "./schemas.ts";
import { advertisedUrl } from "./worker-health.ts";

/**
 * A worker that could not bind its port is relaunched at once on another port, this many times in
 * a row; the next conflict goes to the restart policy like any failure, so it can never spin.
 */
export const MAX_PORT_CONFLICTS_IN_A_ROW = 3;

/** Start the worker's process again (WorkerLauncher.launch). */
export type Launch = (id: string, entry: WorkerEntry, modelPath: string) => void;

export class ExitHandler {
  constructor(
    private readonly d: LifecycleDeps,
    private readonly table: WorkerTable,
    private readonly launch: Launch,
  ) {}

  async handleExit(id: string, entry: WorkerEntry, child: SupervisedChild, exit: ChildExit): Promise<void> {
    if (entry.child !== child) return; // detached on purpose (an operator's restart)
    entry.child = null;
    endLoading(entry);
    this.d.activity.ended(id); // nothing is in flight on a process that is gone
    const w = this.d.registry.live(id);
    if (!w) return;
    releasePort(this.d.ports, entry, w.port, true);
    // Its pid may be reused by anyone now; a relaunch attaches the new one.
    this.d.admission.attachPid(id, null);
    const { reason } = this.keepExit(w, entry, child, exit);

    if (reason === "stopped" || entry.stopRequested || this.table.shuttingDown) {
      this.finish(id, "stopped");
      return;
    }
    if (reason === "port_conflict") {
      // Whatever the probes said, this port does not work for this worker: skip it for a while.
      this.d.ports.quarantine(w.port);
      entry.portConflicts++;
      if (entry.portConflicts <= MAX_PORT_CONFLICTS_IN_A_ROW) {
        this.relaunchOnAnotherPort(id, entry);
        return;
      }
    }
    this.follow(id, entry, this.d.restartPolicy.decide(entry.history, reason, this.d.clock.monotonic()), reason);
  }

  /** Classify the exit, keep it on the record, and tell the bus and the log. */
  private keepExit(w: WorkerSnapshot, entry: WorkerEntry, child: SupervisedChild, exit: ChildExit): WorkerExit {
    const id = w.id;
    const ctx = { ...entry, state: w.state, port: w.port };
    // Only a loading worker can have failed to bind; re-probe the port now that its group is gone.
    const bindSuspect = w.state === "loading" && !exit.requested;
    const record = exitRecord(
      bindSuspect ? { ...ctx, outputTail: child.tail(PORT_CONFLICT_TAIL_LINES, "all"), portHeldByOther: this.d.ports.hasListener(w.port) } : ctx,
      exit,
      child.tail(STDERR_TAIL_LINES, "stderr"),
    );
    const { reason, message } = record;
    this.d.registry.recordExit(id, record);
    this.d.registry.update(id, { pid: null, slots_available: 0, in_flight: 0, memory_used_bytes: null });
    this.d.bus.publish("exited", { worker_id: id, reason, code: exit.code, signal: exit.signal, message });
    const level = reason === "stopped" ? "info" : "warn";
    this.d.logger[level]("worker exited", { worker_id: id, reason, code: exit.code, signal: exit.signal });
    return record;
  }

  /** Carry out the restart policy's decision. */
  private follow(id: string, entry: WorkerEntry, decision: RestartDecision, reason: ExitReason, fallbackWhy?: string): void {
    if (decision.action === "restart") this.scheduleRestart(id, entry, decision.delayMs, decision.attempt, reason);
    else if (decision.action === "crash_loop") this.enterCrashLoop(id, decision.why);
    else if (fallbackWhy !== undefined) this.enterCrashLoop(id, fallbackWhy);
    else this.finish(id, "gone");
  }

  /** Leave the live list; the final record stays readable for a while. */
  finish(id: string, how: "stopped" | "gone"): void {
    const entry = this.table.entries.get(id);
    const live = this.d.registry.live(id);
    if (entry && live) releasePort(this.d.ports, entry, live.port);
    this.d.admission.release(id);
    this.table.entries.delete(id);
    const w = this.d.registry.retire(id);
    if (how === "stopped" && w) this.d.bus.publish("stopped", { worker_id: id });
  }

  private scheduleRestart(id: string, entry: WorkerEntry, delayMs: number, attempt: number, reason: ExitReason): void {
    const at = this.d.clock.now() + delayMs;
    this.d.registry.transition(id, "loading", { phase: "restarting", next_restart_at: toSystemTime(at), slots_available: 0 });
    this.d.bus.publish("restarting", { worker_id: id, attempt, delay_ms: delayMs, reason });
    this.d.logger.info("worker restart scheduled", { worker_id: id, attempt, delay_ms: delayMs, reason });
    entry.restartTimer = this.d.clock.setTimeout(() => {
      entry.restartTimer = null;
      this.relaunch(id, entry);
    }, delayMs);
  }

  /**
   * The worker never got its port: not a failure of the worker, so no backoff, no restart policy,
   * no restart_count. The old port is quarantined, so the allocator hands out another one.
   */
  private relaunchOnAnotherPort(id: string, entry: WorkerEntry): void {
    this.d.registry.transition(id, "loading", { phase: "restarting", next_restart_at: null, slots_available: 0 });
    this.d.bus.publish("restarting", { worker_id: id, attempt: 0, delay_ms: 0, reason: "port_conflict" });
    this.d.logger.warn("worker could not bind its port; relaunching on another port", { worker_id: id, conflicts: entry.portConflicts });
    this.relaunch(id, entry, { countAsRestart: false });
  }

  /** Launch again (same id, its old port if still free); a launch that throws counts as spawn_failed. */
  relaunch(id: string, entry: WorkerEntry, { countAsRestart = true } = {}): void {
    if (!this.table.mayContinue(id, entry)) return;
    const w = this.d.registry.live(id);
    if (!w || !entry.modelPath) return;
    try {
      const port = this.d.ports.allocate(w.port, entry.binary);
      entry.portHeld = true;
      const now = toSystemTime(this.d.clock.now());
      this.d.registry.update(id, {
        port,
        url: advertisedUrl(this.d.config.workers.host, port),
        ...(countAsRestart ? { restart_count: w.restart_count + 1, last_restart: now } : {}),
        started_at: now,
        ready_at: null,
        failed_health_checks: 0,
      });
      this.launch(id, entry, entry.modelPath);
    } catch (e) {
      const message = errorMessage(e);
      const live = this.d.registry.live(id);
      if (live) releasePort(this.d.ports, entry, live.port);
      this.d.registry.recordExit(id, spawnFailure(message, this.d.clock.now()));
      this.follow(id, entry, this.d.restartPolicy.decide(entry.history, "spawn_failed", this.d.clock.monotonic()), "spawn_failed", message);
    }
  }

  /** Parked without a process until an operator acts: its memory is given back (a retry re-admits it). */
  private enterCrashLoop(id: string, why: string): void {
    this.d.admission.release(id);
    this.d.registry.transition(id, "loading", { phase: "crash_loop", next_restart_at: null, crash_loop_reason: why, slots_available: 0, pid: null });
    this.d.bus.publish("crash_loop", { worker_id: id, reason: why });
    this.d.logger.error("worker in crash loop; not restarting until asked", { worker_id: id, why });
  }
}
