/**
 * Noticing the exit of a process that is not our child (one adopted from a previous hive): no
 * SIGCHLD, no waitpid. We keep `/proc/<pid>/stat` open and re-read it through that descriptor:
 * once the process is gone (reaped) the read fails with ESRCH, even if the pid has been reused
 * meanwhile (the descriptor names the old task, like a pidfd), and a zombie, which nobody may
 * reap in a container whose PID 1 does not, reads as state Z. One shared timer checks every
 * watched process each WATCH_INTERVAL_MS, well inside the 100 ms the hive promises.
 */
import { closeSync, openSync, readSync } from "node:fs";
import { isLiveState, parseProcStat } from "./proc-stat.ts";

export const WATCH_INTERVAL_MS = 50;

const buffer = Buffer.allocUnsafe(1024);

interface Watch {
  fd: number;
  startTime: string;
  resolve: (at: number) => void;
}

const watches = new Set<Watch>();
let timer: ReturnType<typeof setInterval> | null = null;

function stillRunning(w: Watch): boolean {
  try {
    const n = readSync(w.fd, buffer, 0, buffer.length, 0);
    const st = parseProcStat(buffer.toString("latin1", 0, n));
    return st !== null && isLiveState(st.state) && st.startTime === w.startTime;
  } catch {
    return false; // ESRCH: reaped
  }
}

function end(w: Watch): void {
  watches.delete(w);
  try {
    closeSync(w.fd);
  } catch {
    /* closed */
  }
  w.resolve(Date.now());
}

function tick(): void {
  for (const w of watches) if (!stillRunning(w)) end(w);
  if (watches.size === 0 && timer) {
    clearInterval(timer);
    timer = null;
  }
}

export interface ExitWatch {
  /** Resolves with Date.now() when the process has exited (or was never there). */
  readonly exited: Promise<number>;
  /** Stop watching; `exited` then never resolves. */
  cancel(): void;
}

/** Watch `pid`, which must still be the process that started at `startTime`. */
export function watchExit(pid: number, startTime: string): ExitWatch {
  let resolve!: (at: number) => void;
  const exited = new Promise<number>((r) => (resolve = r));
  let fd: number;
  try {
    fd = openSync(`/proc/${pid}/stat`, "r");
  } catch {
    resolve(Date.now());
    return { exited, cancel: () => {} };
  }
  const w: Watch = { fd, startTime, resolve };
  if (!stillRunning(w)) {
    end(w);
    return { exited, cancel: () => {} };
  }
  watches.add(w);
  if (!timer) {
    timer = setInterval(tick, WATCH_INTERVAL_MS);
    (timer as { unref?: () => void }).unref?.();
  }
  return {
    exited,
    cancel: () => {
      if (!watches.delete(w)) return;
      try {
        closeSync(fd);
      } catch {
        /* closed */
      }
    },
  };
}
