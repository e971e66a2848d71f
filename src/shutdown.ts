/**
 * Graceful shutdown: stop accepting, end SSE streams (abort `signal`), run the registered teardown
 * steps in order within a bounded total time, then exit. A second signal forces: the registered
 * force steps (SIGKILL to every worker group) run synchronously and the process exits at once.
 * Started by SIGTERM/SIGINT or by `request()` (POST /v1/shutdown); either way it ends with one
 * summary line ("shutdown complete": duration, and what the summary providers add: the workers'
 * total, graceful, forced, kept) and the same exit.
 */
import type { Logger } from "./shared/logger.ts";
import { EXIT_FAILURE, EXIT_OK } from "./exit-codes.ts";

export interface TeardownStep {
  name: string;
  run: () => Promise<void> | void;
}

export interface ShutdownResult {
  timedOut: boolean;
  failed: string[];
  ms: number;
}

export class ShutdownCoordinator {
  private readonly controller = new AbortController();
  private readonly steps: TeardownStep[] = [];
  private readonly forceSteps: Array<() => void> = [];
  private readonly summaries: Array<() => Record<string, unknown>> = [];
  private running: Promise<ShutdownResult> | null = null;
  private startedReason: string | null = null;
  private startedAtMs = 0;
  /** How the process ends once shutdown is done (installSignalHandlers sets it; tests leave it unset). */
  private exit: ((code: number) => void) | null = null;

  constructor(
    private readonly logger: Logger,
    private readonly totalTimeoutMs: number,
  ) {}

  /** Aborted as soon as shutdown starts: long-lived streams listen to it. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get started(): boolean {
    return this.running !== null;
  }

  /** Why shutdown started and how long it has run (ms), for a step that records it; null before it started. */
  get progress(): { reason: string; ms: number } | null {
    return this.startedReason === null ? null : { reason: this.startedReason, ms: Math.round(performance.now() - this.startedAtMs) };
  }

  /** Steps run in registration order. */
  register(name: string, run: TeardownStep["run"]): void {
    this.steps.push({ name, run });
  }

  /** Synchronous last resort when a second signal arrives or the bound is exceeded. */
  registerForce(fn: () => void): void {
    this.forceSteps.push(fn);
  }

  /** Fields for the summary line, asked for when shutdown ends (e.g. how the workers ended). */
  addSummary(fields: () => Record<string, unknown>): void {
    this.summaries.push(fields);
  }

  /**
   * Shut down from inside (POST /v1/shutdown): like the first signal, ending in the same exit.
   * A request while shutdown runs changes nothing.
   */
  request(reason: string): void {
    if (this.running) return;
    void this.run(reason).then((r) => this.exit?.(r.timedOut ? EXIT_FAILURE : EXIT_OK));
  }

  /** Idempotent: a second call returns the first run. */
  run(reason: string): Promise<ShutdownResult> {
    this.running ??= this.execute(reason);
    return this.running;
  }

  force(): void {
    for (const fn of this.forceSteps) {
      try {
        fn();
      } catch (e) {
        this.logger.error("force step failed", { err: String(e) });
      }
    }
  }

  private async execute(reason: string): Promise<ShutdownResult> {
    const started = performance.now();
    this.startedReason = reason;
    this.startedAtMs = started;
    this.logger.info("shutting down", { reason, timeout_s: this.totalTimeoutMs / 1000 });
    this.controller.abort();
    const failed: string[] = [];
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), this.totalTimeoutMs);
    });
    const all = (async () => {
      for (const step of this.steps) {
        try {
          await step.run();
        } catch (e) {
          failed.push(step.name);
          this.logger.error("teardown step failed", { step: step.name, err: (e as Error)?.message ?? String(e) });
        }
      }
      return "done" as const;
    })();
    const outcome = await Promise.race([all, deadline]);
    clearTimeout(timer);
    const timedOut = outcome === "timeout";
    if (timedOut) {
      this.logger.warn("shutdown bound exceeded; forcing", { timeout_s: this.totalTimeoutMs / 1000 });
      this.force();
    }
    const ms = Math.round(performance.now() - started);
    const summary: Record<string, unknown> = {};
    for (const fields of this.summaries) {
      try {
        Object.assign(summary, fields());
      } catch (e) {
        this.logger.error("shutdown summary failed", { err: String(e) });
      }
    }
    this.logger.info("shutdown complete", { reason, ms, timed_out: timedOut, ...summary, failed: failed.length ? failed : undefined });
    return { timedOut, failed, ms };
  }

  /**
   * SIGTERM (systemd) and SIGINT both start the graceful path; a second signal forces.
   * `exit` is injected so tests can observe it.
   */
  installSignalHandlers(exit: (code: number) => void = (c) => process.exit(c)): () => void {
    this.exit = exit;
    const onSignal = (sig: NodeJS.Signals) => {
      if (this.running) {
        this.logger.warn("second signal: forcing exit", { signal: sig });
        this.force();
        exit(EXIT_FAILURE);
        return;
      }
      // A shutdown that had to force-kill is a failure systemd should record (request's exit status).
      this.request(sig);
    };
    process.on("SIGTERM", onSignal);
    process.on("SIGINT", onSignal);
    return () => {
      process.off("SIGTERM", onSignal);
      process.off("SIGINT", onSignal);
    };
  }
}
