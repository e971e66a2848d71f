/**
 * Where a supervised child's output goes and how the supervisor reads it back: pipes (two streams,
 * appended to the log by us) or the log file itself as stdout and stderr (followed). Each line fans
 * out to the ring, the log, the echo and the per-line callback.
 */
import { closeSync, fstatSync, mkdirSync, openSync } from "node:fs";
import { dirname } from "node:path";
import { AppendLog, LineRing, pumpLines, type OutputStream } from "./child-output.ts";
import { HiveError, errorMessage } from "./errors.ts";
import { followFile, type FollowedFile } from "./log-follower.ts";

/**
 * After the child exits we wait at most this long for EOF on its pipes. Normally EOF follows at
 * once (the group was just SIGKILLed); a descendant that escaped into its own session could keep
 * a pipe open forever, and must not delay the exit notification.
 */
export const OUTPUT_DRAIN_MS = 200;

/** What a channel needs to know about the child. */
export interface ChannelOptions {
  id: string;
  logFile?: string;
  echo?: (line: string) => void;
  onOutput?: (stream: OutputStream, line: string) => void;
}

export type ChildProcess = Bun.Subprocess<"ignore", "pipe" | number, "pipe" | number>;

/** Where a child's output goes and how the supervisor reads it back. */
export interface OutputChannel {
  /** Bun.spawn's stdout/stderr. */
  stdio: "pipe" | number;
  /** Called right after the spawn (or its failure, with null). */
  started(proc: ChildProcess | null): void;
  /** After the exit: read what is left, then release everything. */
  drain(): Promise<void>;
  /** Stop reading, leave the child running. */
  detach(): void;
}

/** Pipes: two streams kept apart, lines appended to the log by us. */
export function pipeOutput(opts: ChannelOptions, ring: LineRing): OutputChannel {
  const log = openLog(opts);
  const onLine = lineFanOut(opts, ring, log);
  // Flush the log after each chunk (not each line) so it is near-real-time but cheap.
  const flushLog = () => log?.flush();
  let pumps: { done: Promise<void>; cancel: () => void }[] = [];
  return {
    stdio: "pipe",
    started(proc) {
      if (!proc) {
        void log?.close();
        return;
      }
      pumps = [
        pumpLines(proc.stdout as ReadableStream<Uint8Array>, (l) => onLine("stdout", l), flushLog),
        pumpLines(proc.stderr as ReadableStream<Uint8Array>, (l) => onLine("stderr", l), flushLog),
      ];
    },
    drain: () => drainPipes(pumps, log),
    detach() {
      for (const p of pumps) p.cancel();
      void log?.close();
    },
  };
}

/** The log file as stdout and stderr: the child writes it directly, we follow it. */
export function fileOutput(opts: ChannelOptions, ring: LineRing): OutputChannel {
  const path = opts.logFile!;
  let fd: number;
  let from: number;
  try {
    mkdirSync(dirname(path), { recursive: true });
    fd = openSync(path, "a"); // O_APPEND: our writes and a grandchild's never overwrite each other
    from = fstatSync(fd).size;
  } catch (e) {
    throw new HiveError(500, "WORKER_SPAWN_FAILED", `cannot open log file ${path} for ${opts.id}: ${errorMessage(e)}`);
  }
  const onLine = lineFanOut(opts, ring, undefined);
  let follower: FollowedFile | null = null;
  return {
    stdio: fd,
    started(proc) {
      closeSync(fd); // the child holds its own copy
      if (!proc) return;
      try {
        follower = followFile({ path, from, onLine: (l) => onLine("stdout", l), onSkip: skipNotice(opts) });
      } catch {
        follower = null; // the file vanished already: the child runs, its lines are not seen
      }
    },
    async drain() {
      follower?.close();
    },
    detach() {
      follower?.close();
    },
  };
}

/** The echo says when a flood of output was skipped (the log file keeps it). */
export function skipNotice(opts: { id: string; echo?: (line: string) => void }): (bytes: number) => void {
  return (bytes) => {
    try {
      opts.echo?.(`[${opts.id}] … ${bytes} bytes of output not shown (too fast to follow); they are in the log file`);
    } catch {
      /* see lineFanOut */
    }
  };
}

function openLog(opts: ChannelOptions): AppendLog | undefined {
  if (!opts.logFile) return undefined;
  try {
    return new AppendLog(opts.logFile);
  } catch (e) {
    throw new HiveError(500, "WORKER_SPAWN_FAILED", `cannot open log file ${opts.logFile} for ${opts.id}: ${errorMessage(e)}`);
  }
}

/** Each output line goes to the ring, the log, the echo and onOutput; a failing echo or callback is ignored. */
export function lineFanOut(
  opts: { id: string; echo?: (line: string) => void; onOutput?: (stream: OutputStream, line: string) => void },
  ring: LineRing,
  log: AppendLog | undefined,
): (stream: OutputStream, line: string) => void {
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
async function drainPipes(pumps: { done: Promise<void>; cancel: () => void }[], log: AppendLog | undefined): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const drained = await Promise.race([
    Promise.all(pumps.map((p) => p.done)).then(() => true),
    new Promise<false>((r) => (timer = setTimeout(() => r(false), OUTPUT_DRAIN_MS))),
  ]);
  clearTimeout(timer);
  if (!drained) for (const p of pumps) p.cancel();
  await log?.close();
}
