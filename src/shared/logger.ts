/**
 * One line per event. `json` for machines (systemd/journald, log shippers), `pretty` for a TTY.
 * Level comes from RBEE_LOG (debug|info|warn|error). Never pass a token in: use auth-min's fingerprint.
 */
import { writeSync } from "node:fs";

export type LogLevel = "debug" | "info" | "warn" | "error";
export type LogFormat = "pretty" | "json";
export type LogFields = Record<string, unknown>;

const LEVEL_RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

export interface LoggerOptions {
  format: LogFormat;
  level: LogLevel;
  /** Where finished lines go; stderr by default. */
  write?: (line: string) => void;
  now?: () => Date;
}

export function parseLogLevel(value: string | undefined): LogLevel {
  const v = (value ?? "").toLowerCase();
  return v in LEVEL_RANK ? (v as LogLevel) : "info";
}

function formatValue(v: unknown): string {
  if (typeof v === "string") return /[\s"=]/.test(v) ? JSON.stringify(v) : v;
  return JSON.stringify(v);
}

/** A batch this large goes out at once. */
const BATCH_MAX_LINES = 512;

const STDERR = 2;

/**
 * Lines for stderr, written in batches: a line waits for the end of the current turn of the event
 * loop (setImmediate) and goes out with the other lines of that turn in one write. A write per
 * line was the largest single cost of a request (one request log line each). The batch is written
 * before the process handles its next I/O event, so whoever sees the effect of a later request
 * (or of the socket listening) has the earlier lines already. `warn` and `error` lines go out at
 * once with what is pending, and whatever is pending at exit is written synchronously.
 */
function batchedStderr(): (line: string, urgent?: boolean) => void {
  let pending: string[] = [];
  let scheduled = false;
  /** The pending lines as one chunk, or null; pending is empty after. */
  const take = (): string | null => {
    if (pending.length === 0) return null;
    const chunk = pending.join("\n") + "\n";
    pending = [];
    return chunk;
  };
  const flush = () => {
    scheduled = false;
    const chunk = take();
    if (chunk !== null) writeChunk(chunk);
  };
  process.on("exit", () => {
    const chunk = take();
    if (chunk !== null) writeAllSync(Buffer.from(chunk));
  });
  return (line, urgent = false) => {
    pending.push(line);
    if (urgent || pending.length >= BATCH_MAX_LINES) flush();
    else if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  };
}

/** Set while process.stderr holds queued bytes: later chunks queue behind them, in order. */
let queuedInStream = false;

/**
 * One write(2) of the chunk (process.stderr.write costs several times more per byte); what a full
 * non-blocking pipe did not take goes to process.stderr's own queue, and so does every later
 * chunk until that queue has drained, so lines never interleave.
 */
function writeChunk(chunk: string): void {
  if (queuedInStream) {
    process.stderr.write(chunk);
    return;
  }
  let rest: Buffer;
  try {
    const written = writeSync(STDERR, chunk);
    if (written === Buffer.byteLength(chunk)) return;
    rest = Buffer.from(chunk).subarray(written);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EAGAIN") return; // stderr is gone: nothing to tell
    rest = Buffer.from(chunk);
  }
  if (!process.stderr.write(rest)) {
    queuedInStream = true;
    process.stderr.once("drain", () => (queuedInStream = false));
  }
}

/** A synchronous write of the whole chunk (at exit nothing asynchronous runs any more). */
function writeAllSync(buf: Buffer): void {
  for (let tries = 0; buf.length > 0 && tries < 1000; tries++) {
    try {
      buf = buf.subarray(writeSync(STDERR, buf));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EAGAIN") return; // stderr is gone: nothing to tell
    }
  }
}

let stderrBatch: ((line: string, urgent?: boolean) => void) | undefined;

/** The ISO time of `ms`, computed once per millisecond (many request lines share one). */
let lastMs = -1;
let lastIso = "";
function isoNow(): string {
  const ms = Date.now();
  if (ms !== lastMs) {
    lastMs = ms;
    lastIso = new Date(ms).toISOString();
  }
  return lastIso;
}

export function createLogger(opts: LoggerOptions, base: LogFields = {}): Logger {
  const write: (line: string, urgent?: boolean) => void =
    opts.write ?? (stderrBatch ??= batchedStderr());
  const timestamp = opts.now ? () => opts.now!().toISOString() : isoNow;
  const min = LEVEL_RANK[opts.level];
  const hasBase = Object.keys(base).length > 0;
  const emit = (level: LogLevel, msg: string, fields?: LogFields) => {
    if (LEVEL_RANK[level] < min) return;
    const urgent = level === "warn" || level === "error";
    if (opts.format === "json") {
      write(JSON.stringify(hasBase ? { ts: timestamp(), level, msg, ...base, ...fields } : { ts: timestamp(), level, msg, ...fields }), urgent);
    } else {
      const all = { ...base, ...fields };
      const kv = Object.entries(all)
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => `${k}=${formatValue(v)}`)
        .join(" ");
      write(`${timestamp()} ${level.toUpperCase().padEnd(5)} ${msg}${kv ? " " + kv : ""}`, urgent);
    }
  };
  return {
    debug: (m, f) => emit("debug", m, f),
    info: (m, f) => emit("info", m, f),
    warn: (m, f) => emit("warn", m, f),
    error: (m, f) => emit("error", m, f),
    child: (fields) => createLogger(opts, { ...base, ...fields }),
  };
}

/** A logger that drops everything (tests that do not look at logs). */
export const silentLogger: Logger = createLogger({ format: "json", level: "error", write: () => {} });
