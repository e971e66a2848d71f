/**
 * Starting one worker process: the profile's argv with its placeholders filled in, the log file
 * (rotated once it is large), the supervised spawn, and the stall-aware load deadline that stops
 * a worker that never gets ready.
 */
import { renameSync, statSync } from "node:fs";
import { join } from "node:path";
import type { ChildExit, SupervisedChild } from "../shared/daemon-lifecycle.ts";
import { stopChild, type LifecycleDeps, type WorkerEntry } from "./lifecycle-context.ts";
import { startingProgress } from "./loading-progress.ts";
import type { WorkerSnapshot } from "./registry.ts";
import { LoadDeadline } from "./timeout.ts";

/** `{name}` placeholders substituted per argument (no shell ever sees them). */
/** A worker's stdout and stderr: `<logs dir>/<id>.log` (strays.ts finds workers by this too). */
export const workerLogFile = (logsDir: string, id: string): string => join(logsDir, `${id}.log`);

export function substituteArgs(templates: readonly string[], vars: Record<string, string>): string[] {
  return templates.map((a) => a.replace(/\{([a-z_]+)\}/g, (m, k: string) => (k in vars ? vars[k]! : m)));
}

export interface LaunchHooks {
  /** The process ended (any reason); resolves once the exit is handled. */
  onExit(id: string, entry: WorkerEntry, child: SupervisedChild, exit: ChildExit): Promise<void>;
  /** The process runs and the registry says so: readiness may start watching it. */
  onStarted(id: string, entry: WorkerEntry): void;
}

export class WorkerLauncher {
  constructor(
    private readonly d: LifecycleDeps,
    private readonly hooks: LaunchHooks,
  ) {}

  /** Start the worker's process on the port in its record. Throws when it cannot be spawned. */
  launch(id: string, entry: WorkerEntry, modelPath: string): void {
    const w = this.d.registry.live(id);
    if (!w) return;
    entry.modelPath = modelPath;
    const child = this.spawnProcess(id, entry, w, modelPath);
    entry.child = child;
    this.d.admission.attachPid(id, child.pid);
    entry.launchedAt = this.d.clock.monotonic();
    entry.stopReason = null;
    entry.stopMessage = null;
    entry.exitHandled = child.exited.then((exit) => this.hooks.onExit(id, entry, child, exit));
    this.d.registry.update(id, { pid: child.pid, phase: "starting", model_path: modelPath, next_restart_at: null, load_progress: startingProgress(this.d.clock.now()) });
    this.d.bus.publish("spawned", { worker_id: id, pid: child.pid, port: w.port, model_ref: w.model_ref, restart_count: w.restart_count });
    this.d.logger.info("worker spawned", { worker_id: id, pid: child.pid, port: w.port, model_ref: w.model_ref, profile: entry.profileName });
    entry.deadline = this.loadDeadline(id, entry);
    entry.progress = new AbortController();
    this.d.progress.watch(id, w.port, entry.profile.progress_path, entry.progress.signal);
    this.hooks.onStarted(id, entry);
  }

  private spawnProcess(id: string, entry: WorkerEntry, w: WorkerSnapshot, modelPath: string): SupervisedChild {
    const args = substituteArgs(entry.profile.args, {
      worker_id: id,
      model_path: modelPath,
      model_ref: w.model_ref,
      backend: w.backend,
      device: String(w.device),
      port: String(w.port),
      callback_url: `${this.d.callbackBase()}/v1/workers/ready`,
      // The context the memory estimate was sized for (llama-server: "-c", "{context}").
      ...(entry.memory ? { context: String(entry.memory.need.context_length) } : {}),
    });
    const logFile = workerLogFile(this.d.logsDir, id);
    rotateIfLarger(logFile, this.d.config.workers.log_file_max_mb * 1024 * 1024);
    return this.d.spawner({
      id,
      command: [entry.binary, ...args],
      // HF_TOKEN goes to the hub only: workers inherit the hive's environment without it, unless
      // the profile's own env sets it.
      env: { HF_TOKEN: undefined, ...this.d.workerEnv, ...entry.profile.env },
      logFile,
      ringLines: this.d.config.workers.log_ring_lines,
      echo: this.d.echo,
      // Output is a sign of life: it pushes the stall deadline out.
      // The deadline exists while it loads: then its output is also its visible progress.
      onOutput: (_stream, line) => {
        if (!entry.deadline) return;
        entry.deadline.touch();
        this.d.progress.output(id, line);
      },
    });
  }

  /** A worker that stalls (no output) or takes longer than the hard cap is stopped as load_timeout. */
  loadDeadline(id: string, entry: WorkerEntry): LoadDeadline {
    const cfg = this.d.config.workers;
    return new LoadDeadline(this.d.clock, cfg.loading_stall_timeout_s * 1000, cfg.loading_max_s * 1000, (kind, waited) => {
      const why =
        kind === "stalled"
          ? `no output for ${cfg.loading_stall_timeout_s} s while loading (stall timeout)`
          : `not ready after ${Math.round(waited / 100) / 10} s (loading_max_s = ${cfg.loading_max_s})`;
      this.d.logger.warn("worker load timeout", { worker_id: id, why });
      this.d.bus.publish("load_timeout", { worker_id: id, kind, message: why });
      void stopChild(entry, "load_timeout", why, cfg.stop_grace_s * 1000);
    });
  }
}

/** Restarts append to the same log: keep one previous generation once it grows past the cap. */
function rotateIfLarger(path: string, maxBytes: number): void {
  try {
    if (statSync(path).size > maxBytes) renameSync(path, `${path}.1`);
  } catch {
    // no log yet
  }
}
