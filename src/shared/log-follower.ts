/**
 * Following a log file as it grows (`tail -f`), for children whose stdout/stderr IS that file: a
 * file, unlike a pipe, never answers a write with EPIPE/SIGPIPE once the reader is gone, so the
 * child outlives the hive, and the next hive simply follows the same file again.
 *
 * One timer for every followed file (FOLLOW_INTERVAL_MS): each tick is an fstat per file and a
 * read only where it grew, so 100 quiet workers cost 100 fstat calls per tick (about 2 µs each).
 * A writer that runs far ahead (a flood of output) is not chased byte by byte: past
 * MAX_BACKLOG_BYTES the follower jumps to the last SKIP_KEEP_BYTES; the file keeps everything.
 */
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { LineSplitter } from "./child-output.ts";

export const FOLLOW_INTERVAL_MS = 50;
/** Read at most this much per file per tick, so one chatty child cannot stall the event loop. */
export const MAX_READ_PER_TICK = 1024 * 1024;
export const MAX_BACKLOG_BYTES = 8 * 1024 * 1024;
export const SKIP_KEEP_BYTES = 256 * 1024;

const CHUNK = 64 * 1024;
const buffer = Buffer.allocUnsafe(CHUNK);

export interface FollowOptions {
  path: string;
  /** Byte offset to start from; "end" = only what is written from now on. */
  from: number | "end";
  onLine: (line: string) => void;
  /** The follower jumped over this many bytes (a flood); they are in the file, not in onLine. */
  onSkip?: (bytes: number) => void;
}

export interface FollowedFile {
  /** Read everything written so far, now (e.g. the writer just exited). */
  drain(): void;
  /** drain() and then stop following; a last line without newline is delivered. */
  close(): void;
}

class Follower implements FollowedFile {
  private offset: number;
  private readonly lines: LineSplitter;
  private closed = false;

  constructor(
    private readonly fd: number,
    private readonly o: FollowOptions,
  ) {
    this.offset = o.from === "end" ? fstatSync(fd).size : o.from;
    this.lines = new LineSplitter((l) => {
      try {
        o.onLine(l);
      } catch {
        // a failing consumer must not stop the follower
      }
    });
  }

  /** Read up to `budget` new bytes; returns how many were read. */
  poll(budget: number): number {
    if (this.closed) return 0;
    let size: number;
    try {
      size = fstatSync(this.fd).size;
    } catch {
      return 0;
    }
    if (size < this.offset) this.offset = 0; // truncated in place (`: > file`): start over
    if (size - this.offset > MAX_BACKLOG_BYTES) {
      const skipped = size - SKIP_KEEP_BYTES - this.offset;
      this.offset = size - SKIP_KEEP_BYTES;
      this.lines.end(); // the partial line before the gap is finished as it is
      try {
        this.o.onSkip?.(skipped);
      } catch {
        /* see onLine */
      }
    }
    let read = 0;
    while (this.offset < size && read < budget) {
      let n: number;
      try {
        n = readSync(this.fd, buffer, 0, Math.min(CHUNK, size - this.offset, budget - read), this.offset);
      } catch {
        break;
      }
      if (n <= 0) break;
      this.offset += n;
      read += n;
      this.lines.push(buffer.subarray(0, n));
    }
    return read;
  }

  drain(): void {
    while (this.poll(Number.MAX_SAFE_INTEGER) > 0) {
      /* until EOF */
    }
  }

  close(): void {
    if (this.closed) return;
    this.drain();
    this.lines.end();
    this.closed = true;
    pool.delete(this);
    try {
      closeSync(this.fd);
    } catch {
      /* already closed */
    }
  }
}

const pool = new Set<Follower>();
let timer: ReturnType<typeof setInterval> | null = null;

function tick(): void {
  for (const f of pool) f.poll(MAX_READ_PER_TICK);
  if (pool.size === 0 && timer) {
    clearInterval(timer);
    timer = null;
  }
}

/** Start following `path` (it must exist). Throws what open(2) throws. */
export function followFile(o: FollowOptions): FollowedFile {
  const fd = openSync(o.path, "r");
  const f = new Follower(fd, o);
  pool.add(f);
  if (!timer) {
    timer = setInterval(tick, FOLLOW_INTERVAL_MS);
    // Following never keeps a process alive by itself (the hive has its server for that).
    (timer as { unref?: () => void }).unref?.();
  }
  return f;
}

/** The last `n` lines of a file (at most `maxBytes` read from its end); [] when it is missing. */
export function lastLines(path: string, n: number, maxBytes = SKIP_KEEP_BYTES): string[] {
  if (n <= 0) return [];
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch {
    return [];
  }
  try {
    const size = fstatSync(fd).size;
    const start = Math.max(0, size - maxBytes);
    const buf = Buffer.allocUnsafe(size - start);
    let got = 0;
    while (got < buf.length) {
      const r = readSync(fd, buf, got, buf.length - got, start + got);
      if (r <= 0) break;
      got += r;
    }
    const out: string[] = [];
    const lines = new LineSplitter((l) => out.push(l));
    lines.push(buf.subarray(0, got));
    lines.end();
    if (start > 0) out.shift(); // began mid-line
    return out.slice(-n);
  } catch {
    return [];
  } finally {
    closeSync(fd);
  }
}
