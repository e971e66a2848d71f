/**
 * At start-up, what became of the workers the previous hive saved (persistence.ts), one by one, in
 * their saved order:
 *
 *   process gone (no live process has the pid)      → reported exited; what is left of its process
 *                                                     group (grandchildren) is SIGKILLed
 *   pid now another process (other start time)      → reported exited; that process is never touched
 *   same process, keep_workers_on_exit = false      → stopped (group SIGTERM, grace, SIGKILL): workers
 *                                                     live and die with the hive
 *   same process, keep policy, loading              → adopted; its readiness is watched again
 *   same process, keep policy, running, answers
 *     GET <health_path> within monitor.timeout_s    → adopted (same id, url, port, state, counters)
 *   same process, keep policy, does not answer      → stopped, reported unhealthy
 *   no process (downloading, restarting, crash_loop) → restored: continues once the hive listens
 *
 * "Reported" means: its final record stays readable (GET /v1/workers/{id}) for exited_retention_s
 * and an `exited` event goes out; it is not in /v1/workers/list. Adoption runs before the hive
 * binds its port, so a new spawn can never take an adopted worker's port.
 */
import { DEFAULT_WORKER_PROFILE, resolveProfile, type HiveConfig } from "../config.ts";
import type { Clock } from "../shared/clock.ts";
import { adoptProcess } from "../shared/daemon-lifecycle.ts";
import { errorMessage } from "../shared/errors.ts";
import type { HttpClient } from "../shared/http-client.ts";
import { lastLines } from "../shared/log-follower.ts";
import type { Logger } from "../shared/logger.ts";
import { groupMembers, identify, startedNoEarlier } from "../shared/proc-stat.ts";
import { toSystemTime } from "../shared/rbee-types.ts";
import { STDERR_TAIL_LINES } from "./exit-forensics.ts";
import type { PersistedWorker, WorkerProcess } from "./persistence.ts";
import type { ExitReason, WorkerExit, WorkerInfo } from "./schemas.ts";
import type { AdoptedProcess } from "./survival.ts";
import { isHealthyAnswer, localUrl } from "./worker-health.ts";
import { workerLogFile } from "./worker-launcher.ts";

/** What adoption needs of the lifecycle (WorkerLifecycleManager). */
export interface AdoptingLifecycle {
  adopt(record: WorkerInfo, proc: AdoptedProcess): void;
  restore(record: WorkerInfo, model: Promise<string> | "parked"): void;
  reportGone(record: WorkerInfo, exit: WorkerExit): void;
}

export interface AdoptionDeps {
  saved: PersistedWorker[];
  /** [workers] keep_workers_on_exit. */
  keep: boolean;
  lifecycle: AdoptingLifecycle;
  http: HttpClient;
  config: HiveConfig;
  logsDir: string;
  clock: Clock;
  logger: Logger;
  /** Where a restored worker's model is: its saved download (resumed) or the model resolved again. */
  modelFor: (record: WorkerInfo) => Promise<string>;
  /** Resolves once the hive listens: a restored worker's launch needs the callback URL. */
  listening: Promise<void>;
}

export interface AdoptionOutcome {
  adopted: string[];
  restored: string[];
  /** Their process was gone (or is another process now). */
  exited: string[];
  /** Running, but stopped: the default exit policy, a stop under way, or no health answer. */
  stopped: string[];
  /** Of `exited`: the pid belongs to another process now, which was left alone. */
  pidReused: string[];
  /** Every stop started here has finished (the processes are gone). */
  stops: Promise<void>;
}

type Verdict =
  | { kind: "adopt"; proc: AdoptedProcess }
  | { kind: "restore" }
  | { kind: "gone"; reason: ExitReason; message: string; proc: WorkerProcess | null; pidReused?: boolean }
  | { kind: "stop"; reason: ExitReason; message: string; proc: AdoptedProcess };

export async function adoptWorkers(d: AdoptionDeps): Promise<AdoptionOutcome> {
  const verdicts = await Promise.all(d.saved.map((row) => judge(d, row)));
  const out: AdoptionOutcome = { adopted: [], restored: [], exited: [], stopped: [], pidReused: [], stops: Promise.resolve() };
  const stops: Promise<unknown>[] = [];
  const graceMs = d.config.workers.stop_grace_s * 1000;
  // Applied in the saved order, so the list reads as it did before the restart.
  d.saved.forEach(({ record }, i) => {
    const v = verdicts[i]!;
    switch (v.kind) {
      case "adopt":
        d.lifecycle.adopt(record, v.proc);
        out.adopted.push(record.id);
        break;
      case "restore":
        d.lifecycle.restore(record, record.phase === "crash_loop" ? "parked" : d.listening.then(() => d.modelFor(record)));
        out.restored.push(record.id);
        break;
      case "gone":
        if (v.proc && !v.pidReused) killLeftovers(d, record.id, v.proc);
        d.lifecycle.reportGone(record, goneExit(d, record, v.reason, v.message));
        out.exited.push(record.id);
        if (v.pidReused) out.pidReused.push(record.id);
        break;
      case "stop": {
        // Its last output goes into the record before the stop adds the lines of its shutdown.
        const exit = goneExit(d, record, v.reason, v.message);
        const child = adoptProcess({ id: record.id, pid: v.proc.pid, pgid: v.proc.pgid, startTime: v.proc.startTime });
        stops.push(child.stop(graceMs));
        d.lifecycle.reportGone(record, exit);
        out.stopped.push(record.id);
        break;
      }
    }
  });
  out.stops = Promise.all(stops).then(() => {});
  return out;
}

async function judge(d: AdoptionDeps, { record, process: proc }: PersistedWorker): Promise<Verdict> {
  if (!proc) return { kind: "restore" };
  if (proc.startTime === null) {
    const message = `its process (pid ${proc.pid}) cannot be identified (no start time was saved), so it was left alone`;
    return { kind: "gone", reason: "exited", message, proc, pidReused: true };
  }
  const who = identify(proc.pid, proc.startTime);
  if (who === "other") {
    const message = `worker is gone: its pid ${proc.pid} belongs to another process now, which was left alone`;
    return { kind: "gone", reason: "exited", message, proc, pidReused: true };
  }
  if (who === "gone") {
    return { kind: "gone", reason: "exited", message: `worker (pid ${proc.pid}) exited while no hive was watching it; its exit status is unknown`, proc };
  }
  const same = { pid: proc.pid, pgid: proc.pgid, startTime: proc.startTime };
  if (!d.keep) {
    const message = "stopped at start-up: a previous hive left it running, and workers live and die with the hive (keep_workers_on_exit = false)";
    return { kind: "stop", reason: "stopped", message, proc: same };
  }
  if (record.phase === "stopping") return { kind: "stop", reason: "stopped", message: "stopped at start-up: its stop was under way when the previous hive ended", proc: same };
  if (record.state === "loading") return { kind: "adopt", proc: same };
  const failure = await probe(d, record);
  if (failure === null) return { kind: "adopt", proc: same };
  return { kind: "stop", reason: "unhealthy", message: `left running by the previous hive but its health check failed (${failure}); stopped`, proc: same };
}

/** One health check as the monitor does it: null when healthy, else what went wrong. */
async function probe(d: AdoptionDeps, record: WorkerInfo): Promise<string | null> {
  const profile = resolveProfile(d.config, record.profile) ?? DEFAULT_WORKER_PROFILE;
  const url = `${localUrl(record.port)}${profile.health_path}`;
  try {
    const res = await d.http.request(url, { timeoutMs: d.config.monitor.timeout_s * 1000 });
    return isHealthyAnswer(res.status, res.body, profile.healthy_status) ? null : `GET ${profile.health_path} answered ${res.status}`;
  } catch (e) {
    return `GET ${profile.health_path}: ${errorMessage(e)}`;
  }
}

/** The final record of a worker that did not come back, with the last lines of its log. */
function goneExit(d: AdoptionDeps, record: WorkerInfo, reason: ExitReason, message: string): WorkerExit {
  const tail = lastLines(workerLogFile(d.logsDir, record.id), STDERR_TAIL_LINES);
  return { reason, code: null, signal: null, message, stderr_tail: tail, at: toSystemTime(d.clock.now()) };
}

/**
 * The worker died while no hive watched it; what it started may still run in its process group.
 * Only processes started no earlier than the worker are killed: the group id cannot have been
 * reused while they live, and nothing older can belong to it.
 */
function killLeftovers(d: AdoptionDeps, workerId: string, proc: WorkerProcess): void {
  if (proc.startTime === null || proc.pgid <= 1) return;
  const left = groupMembers(proc.pgid).filter((m) => startedNoEarlier(m.startTime, proc.startTime!));
  for (const m of left) {
    try {
      process.kill(m.pid, "SIGKILL");
    } catch {
      // gone meanwhile
    }
  }
  if (left.length > 0) d.logger.warn("killed what a gone worker left running in its process group", { worker_id: workerId, pids: left.map((m) => m.pid) });
}
