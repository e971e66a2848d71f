/**
 * Generic child-process supervisor on Bun.spawn (argv only, never a shell).
 *
 * Guarantees, for every child spawned here:
 * - it runs in its own session / process group (`detached: true` → setsid), so signals go to the
 *   whole group with `process.kill(-pid, sig)` and reach grandchildren too;
 * - when it exits *for any reason* (crash, external kill, stop()), the group is SIGKILLed, so no
 *   grandchild outlives it holding a port, VRAM or our output pipes;
 * - `exited` resolves from Bun's `onExit` (no polling), after the remaining output has been
 *   drained (bounded by OUTPUT_DRAIN_MS) so `tail()` already holds the last lines, e.g. the
 *   stderr explaining a crash;
 * - stdout/stderr are split into lines and fanned out to a bounded ring buffer, an append-only log
 *   file, an optional echo (`[id] line`) and an optional per-line callback.
 *
 * Out of scope: if the hive itself is SIGKILLed its children (own sessions) survive; the
 * registry above this module must find and stop them (e.g. from recorded pids).
 *
 * Imports nothing outside src/shared (plus node builtins) so any layer can use it.
 */
import { accessSync, constants as fsConstants, statSync } from "node:fs";
import { constants as osConstants } from "node:os";
import { resolve as resolvePath } from "node:path";
import { AppendLog, LineRing, pumpLines, type OutputStream } from "./child-output.ts";
import { HiveError, errorMessage } from "./errors.ts";

export type { OutputStream };

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
}

export type Spawner = (opts: SpawnOptions) => SupervisedChild;

export const DEFAULT_RING_LINES = 500;
/**
 * After the child exits we wait at most this long for EOF on its pipes. Normally EOF follows at
 * once (the group was just SIGKILLed); a descendant that escaped into its own session could keep
 * a pipe open forever, and must not delay the exit notification.
 */
export const OUTPUT_DRAIN_MS = 200;

// ---------------------------------------------------------------------------------------------
// Helpers

function isErrno(e: unknown, code: string): boolean {
  return typeof e === "object" && e !== null && (e as { code?: unknown }).code === code;
}

/** Signal number → name ("SIGKILL"); Bun's onExit may report either form. */
function signalName(sig: NodeJS.Signals | number | null | undefined): string | null {
  if (sig === null || sig === undefined) return null;
  if (typeof sig === "string") return sig;
  for (const [name, num] of Object.entries(osConstants.signals)) if (num === sig) return name;
  return `SIG${sig}`;
}

/**
 * Resolve command[0] to an absolute executable path, or throw WORKER_BINARY_NOT_FOUND.
 * Checked before spawning so the caller gets a clear, synchronous error instead of an ENOENT
 * from deep inside Bun.
 */
export function resolveExecutable(cmd: string | undefined, cwd: string, PATH: string | undefined): string {
  if (!cmd) throw new HiveError(500, "WORKER_BINARY_NOT_FOUND", "worker command is empty");
  if (cmd.includes("/")) {
    const abs = resolvePath(cwd, cmd);
    let isFile = false;
    try {
      isFile = statSync(abs).isFile();
    } catch {
      throw new HiveError(500, "WORKER_BINARY_NOT_FOUND", `worker binary not found: ${abs}`, { path: abs });
    }
    if (!isFile) {
      throw new HiveError(500, "WORKER_BINARY_NOT_FOUND", `worker binary is not a regular file: ${abs}`, { path: abs });
    }
    try {
      accessSync(abs, fsConstants.X_OK);
    } catch {
      throw new HiveError(500, "WORKER_BINARY_NOT_FOUND", `worker binary is not executable: ${abs}`, { path: abs });
    }
    return abs;
  }
  const found = Bun.which(cmd, PATH === undefined ? undefined : { PATH });
  if (!found) {
    throw new HiveError(500, "WORKER_BINARY_NOT_FOUND", `worker binary "${cmd}" not found on PATH`, { path: cmd });
  }
  return found;
}

/** process.env overlaid with `extra`; undefined values removed. */
function buildEnv(extra: Record<string, string | undefined> | undefined): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries({ ...process.env, ...extra })) if (v !== undefined) env[k] = v;
  return env;
}

// ---------------------------------------------------------------------------------------------
// The supervisor

/** What the exit callback and the handle share (Bun's onExit may fire before Bun.spawn returns). */
interface ExitState {
  hasExited: boolean;
  /** stop() was called before the exit: the exit is marked requested. */
  stopRequested: boolean;
  /** The exit record, set once the output is drained. */
  record: ChildExit | null;
}

export const spawnSupervised: Spawner = (opts) => {
  const cwd = opts.cwd ?? process.cwd();
  const env = buildEnv(opts.env);
  const exe = resolveExecutable(opts.command[0], cwd, env.PATH);
  requireDirectory(cwd, opts.id);
  const ring = new LineRing(Math.max(0, Math.floor(opts.ringLines ?? DEFAULT_RING_LINES)));
  const log = openLog(opts);

  const state: ExitState = { hasExited: false, stopRequested: false, record: null };
  let resolveExited!: (e: ChildExit) => void;
  const exited = new Promise<ChildExit>((r) => (resolveExited = r));
  // onExit could in theory fire before the handler below is installed; remember it then.
  let earlyExit: [number | null, string | null] | undefined;
  let onExitSeen: (code: number | null, sig: string | null) => void = (code, sig) => {
    earlyExit = [code, sig];
  };

  const proc = startProcess(opts.id, [exe, ...opts.command.slice(1)], cwd, env, log, (code, sig) => onExitSeen(code, sig));
  const killGroup = (sig: NodeJS.Signals) => signalGroup(proc, sig, state.hasExited);
  const onLine = lineFanOut(opts, ring, log);
  // Flush the log after each chunk (not each line) so it is near-real-time but cheap.
  const flushLog = () => log?.flush();
  const pumps = [
    pumpLines(proc.stdout, (l) => onLine("stdout", l), flushLog),
    pumpLines(proc.stderr, (l) => onLine("stderr", l), flushLog),
  ];

  onExitSeen = (code, sig) => {
    if (state.hasExited) return;
    state.hasExited = true;
    const record: ChildExit = { code: sig ? null : code, signal: sig, requested: state.stopRequested, at: Date.now() };
    // No grandchild survives its parent. The pgid stays reserved while any member lives, so
    // this cannot hit an unrelated group unless the group is already empty (then ESRCH).
    killGroup("SIGKILL");
    void drainOutput(pumps, log).then(() => {
      state.record = record;
      resolveExited(record);
    });
  };
  if (earlyExit) onExitSeen(...earlyExit);

  return childHandle({ id: opts.id, pid: proc.pid, state, exited, killGroup, ring });
};

function requireDirectory(cwd: string, id: string): void {
  try {
    if (!statSync(cwd).isDirectory()) throw new Error("not a directory");
  } catch (e) {
    throw new HiveError(500, "WORKER_SPAWN_FAILED", `cannot spawn ${id}: bad working directory ${cwd}: ${errorMessage(e)}`);
  }
}

function openLog(opts: SpawnOptions): AppendLog | undefined {
  if (!opts.logFile) return undefined;
  try {
    return new AppendLog(opts.logFile);
  } catch (e) {
    throw new HiveError(500, "WORKER_SPAWN_FAILED", `cannot open log file ${opts.logFile} for ${opts.id}: ${errorMessage(e)}`);
  }
}

type ChildProcess = Bun.Subprocess<"ignore", "pipe", "pipe">;

function startProcess(
  id: string,
  argv: string[],
  cwd: string,
  env: Record<string, string>,
  log: AppendLog | undefined,
  onExit: (code: number | null, sig: string | null) => void,
): ChildProcess {
  try {
    return Bun.spawn(argv, {
      cwd,
      env,
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
      detached: true, // setsid(): the child leads its own process group (pgid == pid)
      onExit: (_p, code, sig) => onExit(code, signalName(sig)),
    });
  } catch (e) {
    void log?.close();
    throw new HiveError(500, "WORKER_SPAWN_FAILED", `cannot spawn ${id} (${argv[0]}): ${errorMessage(e)}`);
  }
}

/** Signal the whole group; ESRCH (group gone) is ignored. Returns false if nothing was signalled. */
function signalGroup(proc: ChildProcess, sig: NodeJS.Signals, childExited: boolean): boolean {
  try {
    process.kill(-proc.pid, sig);
    return true;
  } catch (e) {
    if (!isErrno(e, "ESRCH")) return false;
    // No such group: fall back to the child itself, in case it is still alive.
    if (!childExited) {
      try {
        proc.kill(sig);
        return true;
      } catch {
        /* gone */
      }
    }
    return false;
  }
}

/** Each output line goes to the ring, the log, the echo and onOutput; a failing echo or callback is ignored. */
function lineFanOut(opts: SpawnOptions, ring: LineRing, log: AppendLog | undefined): (stream: OutputStream, line: string) => void {
  return (stream, line) => {
    ring.push({ stream, line });
    log?.write(line);
    if (opts.echo) {
      try {
        opts.echo(`[${opts.id}] ${line}`);
      } catch {
        /* a broken echo target must not stop the pump */
      }
    }
    if (opts.onOutput) {
      try {
        opts.onOutput(stream, line);
      } catch {
        /* same */
      }
    }
  };
}

/** Wait for EOF on both pipes (at most OUTPUT_DRAIN_MS, then give up on them), then close the log. */
async function drainOutput(pumps: { done: Promise<void>; cancel: () => void }[], log: AppendLog | undefined): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const drained = await Promise.race([
    Promise.all(pumps.map((p) => p.done)).then(() => true),
    new Promise<false>((r) => (timer = setTimeout(() => r(false), OUTPUT_DRAIN_MS))),
  ]);
  clearTimeout(timer);
  if (!drained) for (const p of pumps) p.cancel();
  await log?.close();
}

function childHandle(c: {
  id: string;
  pid: number;
  state: ExitState;
  exited: Promise<ChildExit>;
  killGroup: (sig: NodeJS.Signals) => boolean;
  ring: LineRing;
}): SupervisedChild {
  let stopping: Promise<ChildExit> | undefined;
  return {
    id: c.id,
    pid: c.pid,
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
        const timer = setTimeout(() => c.killGroup("SIGKILL"), Math.max(0, graceMs));
        try {
          return await c.exited;
        } finally {
          clearTimeout(timer);
        }
      })();
      return stopping;
    },
    signal(sig: NodeJS.Signals): void {
      if (!c.state.hasExited) c.killGroup(sig);
    },
    tail(n: number, stream: OutputStream | "all" = "all"): string[] {
      return c.ring.tail(Math.max(0, Math.floor(n)), stream);
    },
  };
}
