/**
 * Crash forensics: every worker exit gets a reason, a one-sentence message and its stderr tail,
 * so operators (and the restart policy) can tell a stop from a crash, an OOM kill or a load failure.
 */
import type { ExitReason, WorkerExit } from "./schemas.ts";
import type { WorkerState } from "../shared/rbee-types.ts";
import type { ChildExit } from "../shared/daemon-lifecycle.ts";
import { toSystemTime } from "../shared/rbee-types.ts";

export const STDERR_TAIL_LINES = 50;

/** What the hive knew when the process ended. */
export interface ExitContext {
  /** Reason the hive gave when it asked for the stop (unhealthy, load_timeout, stopped), if any. */
  stopReason: ExitReason | null;
  stopMessage: string | null;
  /** State of the worker when it ended. */
  state: WorkerState;
  /** The worker's port (named in the port_conflict message). */
  port?: number;
  /** Last lines of stdout and stderr together: some servers report a bind failure on stdout. */
  outputTail?: string[];
  /** Another socket listens on the worker's port now that its process group is gone. */
  portHeldByOther?: boolean | null;
}

/** How servers say they could not bind (llama.cpp, Rust std/tokio, Node/Bun, Python, Go, …). */
export const PORT_CONFLICT_PATTERN =
  /address already in use|EADDRINUSE|couldn'?t bind|could not bind|can'?t bind|cannot bind|unable to bind|failed to bind|bind failed|error while attempting to bind/i;
/** Only the end of the output counts: the bind failure is what made the server give up. */
export const PORT_CONFLICT_TAIL_LINES = 20;

/** A worker that died while loading because its port was taken (its own words, or a listener is there now). */
export function isPortConflict(ctx: ExitContext): boolean {
  if (ctx.portHeldByOther) return true;
  return (ctx.outputTail ?? []).slice(-PORT_CONFLICT_TAIL_LINES).some((line) => PORT_CONFLICT_PATTERN.test(line));
}

export function classifyExit(ctx: ExitContext, exit: ChildExit): ExitReason {
  if (exit.requested) return ctx.stopReason ?? "stopped";
  if (ctx.state === "loading") return isPortConflict(ctx) ? "port_conflict" : "load_failed";
  if (exit.adopted) return "exited"; // not our child: how it ended is unknown
  if (exit.signal) return "killed";
  return exit.code === 0 ? "exited" : "crashed";
}

export function describeExit(reason: ExitReason, exit: ChildExit, ctx: ExitContext): string {
  if (ctx.stopMessage && exit.requested) return ctx.stopMessage;
  const how = exit.adopted
    ? "exited (adopted from a previous hive, so its exit status is unknown)"
    : exit.signal
      ? `was killed by ${exit.signal}`
      : `exited with code ${exit.code}`;
  switch (reason) {
    case "stopped":
      return exit.adopted ? "stopped on request" : `stopped on request (${exit.signal ? exit.signal : `code ${exit.code}`})`;
    case "load_failed":
      return `worker ${how} before it was ready`;
    case "port_conflict":
      return `worker ${how} before it was ready: its port ${ctx.port ?? "?"} is taken by another socket`;
    case "killed":
      return `worker ${how} (not sent by the hive: OOM killer or an operator?)`;
    default:
      return `worker ${how}`;
  }
}

/** The record kept on the worker (newest in `last_exit`, recent ones in `exits`). */
export function exitRecord(ctx: ExitContext, exit: ChildExit, stderrTail: string[]): WorkerExit {
  const reason = classifyExit(ctx, exit);
  return {
    reason,
    code: exit.code,
    signal: exit.signal,
    message: describeExit(reason, exit, ctx),
    stderr_tail: stderrTail,
    at: toSystemTime(exit.at),
  };
}

/** An exit that happened without a process (the binary vanished, the download failed). */
export function spawnFailure(message: string, at: number): WorkerExit {
  return { reason: "spawn_failed", code: null, signal: null, message, stderr_tail: [], at: toSystemTime(at) };
}
