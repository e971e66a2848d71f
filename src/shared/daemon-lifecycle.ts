/**
 * Generic child-process supervisor on Bun.spawn (argv only, never a shell).
 *
 * Guarantees, for every child spawned here:
 * - it runs in its own session / process group (`detached: true` → setsid), so signals go to the
 *   whole group with `process.kill(-pid, sig)` and reach grandchildren too;
 * - when it exits *for any reason* (crash, external kill, stop()), the group is SIGKILLed, so no
 *   grandchild outlives it holding a port, VRAM or our output pipes;
 * - `exited` resolves from Bun's `onExit` (no polling), after the remaining output has been
 *   read, so `tail()` already holds the last lines, e.g. the stderr explaining a crash;
 * - output is split into lines and fanned out to a bounded ring buffer, the log file, an optional
 *   echo (`[id] line`) and an optional per-line callback.
 *
 * Output, two ways:
 * - pipes (default): stdout and stderr stay apart; the supervisor appends the lines to the log.
 * - `outputToLogFile`: the log file itself (O_APPEND) is the child's stdout and stderr, and the
 *   supervisor follows it (log-follower.ts). A child whose output is a pipe to us gets EPIPE or
 *   SIGPIPE on its next write once we are gone; a file never does, so such a child can outlive
 *   the hive and be adopted by the next one (`adoptProcess`). Both streams share the file and can
 *   no longer be told apart: every stream filter of `tail()` answers all lines.
 *
 * `dieWithParent` (Linux): the child gets a parent-death SIGKILL (setpriv) and its group is
 * registered with the group guardian, so even a SIGKILL of the hive leaves no process behind
 * (parent-death.ts, group-guardian.ts). Without it the child outlives us, on purpose.
 *
 * Imports nothing outside src/shared (plus node builtins) so any layer can use it.
 */
import { LineRing, type OutputStream } from "./child-output.ts";
import { fileOutput, lineFanOut, pipeOutput, skipNotice, type ChildProcess, type OutputChannel } from "./child-channels.ts";
import { HiveError, errorMessage } from "./errors.ts";
import { watchExit } from "./exit-watch.ts";
import { groupGuardian } from "./group-guardian.ts";
import { followFile, lastLines, type FollowedFile } from "./log-follower.ts";
import { parentDeathPrefix } from "./parent-death.ts";
import { identify, readProcStat } from "./proc-stat.ts";
import { buildEnv, requireDirectory, resolveExecutable, signalGroup, signalName, tryKill } from "./process-tools.ts";

export interface SpawnOptions {
  /** Used in the echo prefix "[id] " and in error messages. */
  id: string;
  /**
   * argv. command[0] is a path (contains "/"; a relative one resolves against `cwd`) or a bare
   * name looked up on PATH (the child's PATH when `env.PATH` is given).
   */
  command: string[];
  /**
   * Merged over `process.env` (the child inherits the hive's environment); a key set to
   * `undefined` is removed from the child's environment.
   */
  env?: Record<string, string | undefined>;
  /** Working directory of the child; defaults to the hive's cwd. */
  cwd?: string;
  /** Every output line is appended here (parent directories are created). */
  logFile?: string;
  /** When set, each line is echoed as "[id] line" through it. */
  echo?: (line: string) => void;
  /** Size of the ring buffer of last lines, stdout and stderr interleaved (default 500). */
  ringLines?: number;
  /** Called for every line as it arrives (e.g. stall-aware load timeouts). Exceptions are swallowed. */
  onOutput?: (stream: OutputStream, line: string) => void;
  /**
   * The log file is the child's stdout and stderr, followed for the ring/echo/onOutput (requires
   * `logFile`): the child survives our death without EPIPE. See the header.
   */
  outputToLogFile?: boolean;
  /** Linux: the child and its whole group die when this process dies (setpriv + group guardian). */
  dieWithParent?: boolean;
}

/** A running process this supervisor did not start (left by a previous hive): see adoptProcess. */
export interface AdoptOptions {
  id: string;
  pid: number;
  /** Its process group (every worker leads its own: normally the pid). */
  pgid: number;
  /** Its start time (proc-stat.ts): the pid is only ever signalled while it still matches. */
  startTime: string;
  /** Its stdout/stderr file: followed from its end, the ring starts with its last lines. */
  logFile?: string;
  echo?: (line: string) => void;
  ringLines?: number;
  onOutput?: (stream: OutputStream, line: string) => void;
}

export interface ChildExit {
  /** Exit code, or null when the child was killed by a signal. */
  code: number | null;
  /** Signal name ("SIGKILL", …) when killed by a signal, else null. */
  signal: string | null;
  /** True when stop() was called before the child exited (a plain signal() does not count). */
  requested: boolean;
  /** Date.now() at the moment the exit was observed (before output draining). */
  at: number;
  /** stop() had to SIGKILL the group after the grace (or a force). */
  forced?: boolean;
  /** An adopted process (not our child): its exit status is unknown, code and signal are null. */
  adopted?: boolean;
}

export interface SupervisedChild {
  readonly id: string;
  readonly pid: number;
  /** Resolves once the child has exited (and its output is drained); never rejects. */
  readonly exited: Promise<ChildExit>;
  /** The exit record; non-null exactly when `exited` has resolved. */
  readonly exit: ChildExit | null;
  /**
   * SIGTERM to the whole group, wait up to graceMs, then SIGKILL to the group. Marks the exit as
   * requested. Idempotent (later calls return the first call's promise); after the child has
   * exited it just returns the exit record. Always resolves once the child is reaped.
   */
  stop(graceMs: number): Promise<ChildExit>;
  /** Deliver a signal to the whole group (no-op once exited). Does NOT mark the exit requested. */
  signal(sig: NodeJS.Signals): void;
  /** Last n lines from the ring buffer, oldest first, optionally only one stream. */
  tail(n: number, stream?: OutputStream | "all"): string[];
  /** Its process group (the pid: it leads its own). */
  readonly pgid?: number;
  /** Its start time from /proc (null where unknown): pid + start time name it for good. */
  readonly startTime?: string | null;
  /** Adopted from a previous hive rather than spawned. */
  readonly adopted?: boolean;
  /**
   * Let it go: stop following its output and watching it, leave it running (the keep-workers
   * exit policy). `exited` may never resolve afterwards.
   */
  detach?(): void;
}

export type Spawner = (opts: SpawnOptions) => SupervisedChild;

export const DEFAULT_RING_LINES = 500;

// ---------------------------------------------------------------------------------------------
// The supervisor

/** What the exit callback and the handle share (Bun's onExit may fire before Bun.spawn returns). */
interface ExitState {
  hasExited: boolean;
  /** stop() was called before the exit: the exit is marked requested. */
  stopRequested: boolean;
  /** stop() escalated to SIGKILL before the exit. */
  forced: boolean;
  /** detach() was called: the process is no longer ours to watch. */
  detached: boolean;
  /** The exit record, set once the output is drained. */
  record: ChildExit | null;
}

const newExitState = (): ExitState => ({ hasExited: false, stopRequested: false, forced: false, detached: false, record: null });

export const spawnSupervised: Spawner = (opts) => {
  const cwd = opts.cwd ?? process.cwd();
  const env = buildEnv(opts.env);
  const exe = resolveExecutable(opts.command[0], cwd, env.PATH);
  requireDirectory(cwd, opts.id);
  if (opts.outputToLogFile && !opts.logFile) throw new Error(`spawnSupervised(${opts.id}): outputToLogFile needs logFile`);
  const ring = new LineRing(Math.max(0, Math.floor(opts.ringLines ?? DEFAULT_RING_LINES)));
  const argv = [...(opts.dieWithParent ? parentDeathPrefix() : []), exe, ...opts.command.slice(1)];

  const state = newExitState();
  let resolveExited!: (e: ChildExit) => void;
  const exited = new Promise<ChildExit>((r) => (resolveExited = r));
  // onExit could in theory fire before the handler below is installed; remember it then.
  let earlyExit: [number | null, string | null] | undefined;
  let onExitSeen: (code: number | null, sig: string | null) => void = (code, sig) => {
    earlyExit = [code, sig];
  };
  const output = opts.outputToLogFile ? fileOutput(opts, ring) : pipeOutput(opts, ring);
  const proc = startProcess(opts.id, argv, cwd, env, output, (code, sig) => onExitSeen(code, sig));
  output.started(proc);
  const killGroup = (sig: NodeJS.Signals) => signalGroup(proc.pid, sig, () => !state.hasExited && tryKill(proc.pid, sig));
  const startTime = readProcStat(proc.pid)?.startTime ?? null;
  if (opts.dieWithParent) groupGuardian.add(proc.pid, startTime);

  onExitSeen = (code, sig) => {
    if (state.hasExited) return;
    state.hasExited = true;
    const record: ChildExit = { code: sig ? null : code, signal: sig, requested: state.stopRequested, at: Date.now(), ...(state.forced ? { forced: true } : {}) };
    // No grandchild survives its parent. The pgid stays reserved while any member lives, so
    // this cannot hit an unrelated group unless the group is already empty (then ESRCH).
    killGroup("SIGKILL");
    if (opts.dieWithParent) groupGuardian.remove(proc.pid);
    void output.drain().then(() => {
      state.record = record;
      resolveExited(record);
    });
  };
  if (earlyExit) onExitSeen(...earlyExit);

  return childHandle({
    id: opts.id,
    pid: proc.pid,
    startTime,
    adopted: false,
    state,
    exited,
    killGroup,
    ring,
    anyStream: !!opts.outputToLogFile,
    detach: () => {
      output.detach();
      if (opts.dieWithParent) groupGuardian.remove(proc.pid);
    },
  });
};

/**
 * Take over a process a previous hive started and left running: its exit is noticed without being
 * its parent (exit-watch.ts, within 100 ms), its output followed from its log file, and stop()
 * works on its group as for a spawned child. Nothing is signalled once its pid belongs to another
 * process. The exit status of a process that is not our child is unknown: code and signal are null.
 */
export function adoptProcess(opts: AdoptOptions): SupervisedChild {
  const ringSize = Math.max(0, Math.floor(opts.ringLines ?? DEFAULT_RING_LINES));
  const ring = new LineRing(ringSize);
  const onLine = lineFanOut(opts, ring, undefined);
  let follower: FollowedFile | null = null;
  if (opts.logFile) {
    // The ring starts with what the file already holds (GET …/logs keeps working); only new
    // lines are echoed and count as output.
    for (const line of lastLines(opts.logFile, ringSize)) ring.push({ stream: "stdout", line });
    try {
      follower = followFile({ path: opts.logFile, from: "end", onLine: (l) => onLine("stdout", l), onSkip: skipNotice(opts) });
    } catch {
      follower = null; // log file gone: the process still is ours to watch and stop
    }
  }
  const state = newExitState();
  let resolveExited!: (e: ChildExit) => void;
  const exited = new Promise<ChildExit>((r) => (resolveExited = r));
  const stillOurs = () => identify(opts.pid, opts.startTime) !== "other";
  const killGroup = (sig: NodeJS.Signals) =>
    stillOurs() && signalGroup(opts.pgid, sig, () => identify(opts.pid, opts.startTime) === "same" && tryKill(opts.pid, sig));
  const watch = watchExit(opts.pid, opts.startTime);
  void watch.exited.then((at) => {
    if (state.hasExited) return;
    state.hasExited = true;
    killGroup("SIGKILL"); // its grandchildren go with it, as for a spawned child
    follower?.close();
    const record: ChildExit = { code: null, signal: null, requested: state.stopRequested, at, ...(state.forced ? { forced: true } : {}), adopted: true };
    state.record = record;
    resolveExited(record);
  });
  return childHandle({
    id: opts.id,
    pid: opts.pid,
    pgid: opts.pgid,
    startTime: opts.startTime,
    adopted: true,
    state,
    exited,
    killGroup,
    ring,
    anyStream: true,
    detach: () => {
      watch.cancel();
      follower?.close();
    },
  });
}

function startProcess(
  id: string,
  argv: string[],
  cwd: string,
  env: Record<string, string>,
  output: OutputChannel,
  onExit: (code: number | null, sig: string | null) => void,
): ChildProcess {
  try {
    return Bun.spawn(argv, {
      cwd,
      env,
      stdin: "ignore",
      stdout: output.stdio,
      stderr: output.stdio,
      detached: true, // setsid(): the child leads its own process group (pgid == pid)
      onExit: (_p, code, sig) => onExit(code, signalName(sig)),
    }) as ChildProcess;
  } catch (e) {
    output.started(null);
    throw new HiveError(500, "WORKER_SPAWN_FAILED", `cannot spawn ${id} (${argv[0]}): ${errorMessage(e)}`);
  }
}

function childHandle(c: {
  id: string;
  pid: number;
  pgid?: number;
  startTime: string | null;
  adopted: boolean;
  state: ExitState;
  exited: Promise<ChildExit>;
  killGroup: (sig: NodeJS.Signals) => boolean;
  ring: LineRing;
  /** Both streams share one file: a stream filter cannot be honoured, every filter means all. */
  anyStream: boolean;
  detach: () => void;
}): SupervisedChild {
  let stopping: Promise<ChildExit> | undefined;
  return {
    id: c.id,
    pid: c.pid,
    pgid: c.pgid ?? c.pid,
    startTime: c.startTime,
    adopted: c.adopted,
    exited: c.exited,
    get exit() {
      return c.state.record;
    },
    stop(graceMs: number): Promise<ChildExit> {
      if (stopping) return stopping;
      if (c.state.hasExited) return c.exited;
      c.state.stopRequested = true;
      stopping = (async () => {
        c.killGroup("SIGTERM");
        const timer = setTimeout(() => {
          if (c.state.hasExited) return;
          c.state.forced = true;
          c.killGroup("SIGKILL");
        }, Math.max(0, graceMs));
        try {
          return await c.exited;
        } finally {
          clearTimeout(timer);
        }
      })();
      return stopping;
    },
    signal(sig: NodeJS.Signals): void {
      if (c.state.hasExited) return;
      if (sig === "SIGKILL" && c.state.stopRequested) c.state.forced = true;
      c.killGroup(sig);
    },
    tail(n: number, stream: OutputStream | "all" = "all"): string[] {
      return c.ring.tail(Math.max(0, Math.floor(n)), c.anyStream ? "all" : stream);
    },
    detach(): void {
      if (c.state.detached || c.state.hasExited) return;
      c.state.detached = true;
      c.detach();
    },
  };
}
