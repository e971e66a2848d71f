/**
 * Audit log (LLORCH_AUDIT_MODE=local): append-only JSON lines in `<dir>/YYYY-MM-DD.audit` (UTC
 * day of the injected clock), each line hash-chained to the one before it:
 *
 *   {"seq":42,"ts":"2026-05-01T12:00:00.000Z","event":"auth_success",…fields…,"prev_hash":"<64 hex>","hash":"<64 hex>"}
 *
 * `hash` is the SHA-256 (hex) of the line without its `,"hash":"…"` member, `prev_hash` the
 * previous line's `hash` (64 zeros for the first line ever), and `seq` counts lines from 1. The
 * chain continues across days and restarts (the newest line on disk is read at open).
 *
 * Writes never block the caller: lines wait in a bounded queue and one writer appends them in
 * batches. A security event's `record` resolves once its line is on disk (one fdatasync shared by
 * every line of the batch), so the hive can answer the request after that; other lines are written
 * without a sync of their own. A full queue drops the event: `onDropped` and one log line say so,
 * and an `audit_dropped` line with the count enters the chain when the queue has room again.
 *
 * `verifyAuditDir(dir)` checks a directory and names the first line that was edited, removed or
 * reordered; from a shell: `bun src/shared/audit-logging.ts verify <dir>` (exit 0 intact, 1 not).
 */
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { mkdir, open, readdir, stat, truncate } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "./logger.ts";

export const GENESIS_HASH = "0".repeat(64);
const FILE_NAME = /^\d{4}-\d{2}-\d{2}\.audit$/;
/** The members every line ends with, after its own fields. */
const HASH_SUFFIX_LENGTH = ',"hash":"'.length + 64 + '"}'.length;
const RESERVED = new Set(["seq", "ts", "event", "prev_hash", "hash"]);
/** How much of the newest file is read at open to find its last line. */
const TAIL_BYTES = 64 * 1024;

/** The file calls of the writer (tests slow them down). */
export interface AuditFile {
  write(text: string): Promise<unknown>;
  datasync(): Promise<void>;
  close(): Promise<void>;
}
export type OpenAuditFile = (path: string) => Promise<AuditFile>;

const openAppend: OpenAuditFile = async (path) => {
  const handle = await open(path, "a", 0o640);
  return { write: (text) => handle.write(text), datasync: () => handle.datasync(), close: () => handle.close() };
};

export interface AuditLogOptions {
  dir: string;
  /** Lines waiting to be written at most; an event beyond that is dropped (and said so). */
  queueMax: number;
  /** Unix ms of each event (the injected clock: its UTC day names the file). */
  now?: () => number;
  logger?: Logger;
  /** Told of each dropped event (the metrics count them). */
  onDropped?: (event: string) => void;
  openFile?: OpenAuditFile;
}

interface Pending {
  ts: number;
  event: string;
  fields: Record<string, unknown>;
  security: boolean;
  done: () => void;
  failed: (e: unknown) => void;
}

export const utcDay = (ms: number) => new Date(ms).toISOString().slice(0, 10);

export const sha256Hex = (text: string) => createHash("sha256").update(text).digest("hex");

/** One line: its own fields, the chain members, and `hash` over all of it. */
export function formatAuditLine(seq: number, ts: number, event: string, fields: Record<string, unknown>, prevHash: string): string {
  const own: Record<string, unknown> = { seq, ts: new Date(ts).toISOString(), event };
  for (const [k, v] of Object.entries(fields)) if (!RESERVED.has(k) && v !== undefined) own[k] = v;
  own.prev_hash = prevHash;
  const body = JSON.stringify(own);
  return `${body.slice(0, -1)},"hash":"${sha256Hex(body)}"}`;
}

export class AuditLog {
  private readonly pending: Pending[] = [];
  private syncWaiters: Array<() => void> = [];
  private syncRequested = false;
  private writing: Promise<void> | null = null;
  private file: AuditFile | null = null;
  private fileDay = "";
  private unsynced = false;
  private dropped = 0;
  private closed = false;

  private constructor(
    private readonly o: AuditLogOptions,
    private seq: number,
    private prevHash: string,
  ) {}

  /** Open the log in `dir`: the chain continues from the newest line there (a torn last line left by a crash is cut off). */
  static async open(o: AuditLogOptions): Promise<AuditLog> {
    await mkdir(o.dir, { recursive: true, mode: 0o750 });
    const tail = await readChainTail(o.dir, o.logger);
    return new AuditLog(o, tail.seq, tail.hash);
  }

  /** Lines recorded so far (the newest seq) and events dropped since open. */
  get stats(): { seq: number; dropped: number; queued: number } {
    return { seq: this.seq, dropped: this.dropped, queued: this.pending.length };
  }

  /**
   * Queue one event. Resolves when its line is written (and, for `security`, synced to disk);
   * returns null when the queue is full and the event was dropped.
   */
  record(event: string, fields: Record<string, unknown>, opts: { security?: boolean } = {}): Promise<void> | null {
    if (this.closed) return null;
    if (this.pending.length >= this.o.queueMax) {
      this.drop(event);
      return null;
    }
    if (this.dropped > 0 && this.pending.length === 0) this.noteDrops();
    const promise = new Promise<void>((done, failed) => {
      this.pending.push({ ts: (this.o.now ?? Date.now)(), event, fields, security: opts.security === true, done, failed });
    });
    this.kick();
    return promise;
  }

  /** Resolves once every line recorded so far is on disk (fdatasync). */
  flushed(): Promise<void> {
    if (this.pending.length === 0 && !this.writing && !this.unsynced) return Promise.resolve();
    return new Promise<void>((resolve) => {
      this.syncWaiters.push(resolve);
      this.syncRequested = true;
      this.kick();
    });
  }

  /** Write and sync what is queued, then close the file. Later records are ignored. */
  async close(): Promise<void> {
    if (this.dropped > 0) this.noteDrops();
    await this.flushed();
    this.closed = true;
    await this.writing;
    await this.file?.close();
    this.file = null;
  }

  private drop(event: string): void {
    if (this.dropped === 0) {
      this.o.logger?.warn("audit queue full: events are being dropped until the disk catches up", { queue_max: this.o.queueMax, event });
    }
    this.dropped++;
    this.o.onDropped?.(event);
  }

  /** The queue has room again: the gap goes into the chain itself. */
  private noteDrops(): void {
    const count = this.dropped;
    this.dropped = 0;
    this.o.logger?.warn("audit queue has room again", { dropped: count });
    void this.record("audit_dropped", { count })?.catch(() => {});
  }

  private kick(): void {
    if (this.writing) return;
    this.writing = this.drain()
      .catch((e) => this.o.logger?.error("audit log write failed", { err: String(e) }))
      .finally(() => {
        this.writing = null;
        if (this.pending.length > 0 || this.syncWaiters.length > 0) this.kick();
      });
  }

  /** Take everything queued, append it (per day file), sync when a security event or a flush asks for it. */
  private async drain(): Promise<void> {
    while (this.pending.length > 0 || this.syncWaiters.length > 0) {
      const batch = this.pending.splice(0);
      const waiters = this.syncWaiters.splice(0);
      const sync = this.syncRequested || batch.some((p) => p.security);
      this.syncRequested = false;
      try {
        let text = "";
        for (const p of batch) {
          const day = utcDay(p.ts);
          if (day !== this.fileDay) {
            await this.append(text);
            text = "";
            await this.switchTo(day);
          }
          const line = formatAuditLine(this.seq + 1, p.ts, p.event, p.fields, this.prevHash);
          this.seq++;
          this.prevHash = line.slice(-66, -2);
          text += line + "\n";
        }
        await this.append(text);
        if (sync && this.unsynced && this.file) {
          await this.file.datasync();
          this.unsynced = false;
        }
        for (const p of batch) p.done();
      } catch (e) {
        for (const p of batch) p.failed(e);
        throw e;
      } finally {
        for (const w of waiters) w();
      }
    }
  }

  private async append(text: string): Promise<void> {
    if (!text) return;
    if (!this.file) await this.switchTo(this.fileDay || utcDay((this.o.now ?? Date.now)()));
    await this.file!.write(text);
    this.unsynced = true;
  }

  /** A new UTC day: the previous day's file is synced and closed, the new one opened for appending. */
  private async switchTo(day: string): Promise<void> {
    if (this.file) {
      if (this.unsynced) await this.file.datasync();
      await this.file.close();
      this.unsynced = false;
    }
    this.file = await (this.o.openFile ?? openAppend)(join(this.o.dir, `${day}.audit`));
    this.fileDay = day;
  }
}

/** The newest line on disk: its seq and hash (the genesis when there is none). */
async function readChainTail(dir: string, logger?: Logger): Promise<{ seq: number; hash: string }> {
  const files = (await readdir(dir)).filter((f) => FILE_NAME.test(f)).sort().reverse();
  for (const name of files) {
    const path = join(dir, name);
    const size = (await stat(path)).size;
    if (size === 0) continue;
    const start = Math.max(0, size - TAIL_BYTES);
    const handle = await open(path, "r");
    let text: string;
    try {
      const buf = Buffer.alloc(size - start);
      await handle.read(buf, 0, buf.length, start);
      text = buf.toString("utf8");
    } finally {
      await handle.close();
    }
    if (!text.endsWith("\n")) {
      // A crash in the middle of a write: that line was never confirmed to anyone. Cut it off.
      const keep = text.lastIndexOf("\n") + 1;
      await truncate(path, start + keep);
      logger?.warn("audit log: removed a partial last line left by a crash", { file: path, bytes: text.length - keep });
      text = text.slice(0, keep);
      if (!text) continue;
    }
    const last = text.slice(0, -1).split("\n").pop()!;
    try {
      const parsed = JSON.parse(last) as { seq?: unknown; hash?: unknown };
      if (typeof parsed.seq === "number" && typeof parsed.hash === "string") return { seq: parsed.seq, hash: parsed.hash };
    } catch {
      // fall through
    }
    logger?.error("audit log: the newest line is damaged; the chain continues from its raw bytes (run the verifier)", { file: path });
    return { seq: 0, hash: sha256Hex(last) };
  }
  return { seq: 0, hash: GENESIS_HASH };
}

// ---------------------------------------------------------------------------------- verifier

export type AuditProblem = "edited" | "removed" | "reordered";

export type AuditVerdict =
  | { ok: true; files: number; lines: number; last_seq: number }
  | { ok: false; problem: AuditProblem; file: string; line: number; seq: number | null; message: string; files: number; lines: number };

interface Checked {
  file: string;
  line: number;
  seq: number;
  prevHash: string;
  hash: string;
}

/** Parse one line and check its own hash; null when it is not an intact line. */
function readLine(text: string): { seq: number; prevHash: string; hash: string } | null {
  let parsed: { seq?: unknown; prev_hash?: unknown; hash?: unknown };
  try {
    parsed = JSON.parse(text);
  } catch {
    return null;
  }
  const { seq, prev_hash, hash } = parsed;
  if (typeof seq !== "number" || typeof prev_hash !== "string" || typeof hash !== "string" || !/^[0-9a-f]{64}$/.test(hash)) return null;
  if (!text.endsWith(`,"hash":"${hash}"}`)) return null;
  const body = `${text.slice(0, -HASH_SUFFIX_LENGTH)}}`;
  return sha256Hex(body) === hash ? { seq, prevHash: prev_hash, hash } : null;
}

/**
 * Check every `YYYY-MM-DD.audit` file in `dir`, oldest first, as one chain. The verdict names the
 * first line that breaks it: `edited` (its content no longer matches its hash, or the next line's
 * prev_hash), `removed` (seq numbers missing before it) or `reordered` (a line out of seq order).
 */
export function verifyAuditDir(dir: string): AuditVerdict {
  const names = readdirSync(dir).filter((f) => FILE_NAME.test(f)).sort();
  const lines: Checked[] = [];
  for (const name of names) {
    const text = readFileSync(join(dir, name), "utf8");
    const rows = text.split("\n");
    if (rows.at(-1) === "") rows.pop();
    for (let i = 0; i < rows.length; i++) {
      const checked = readLine(rows[i]!);
      if (!checked) {
        return { ok: false, problem: "edited", file: name, line: i + 1, seq: null, message: `line ${i + 1} of ${name} was edited: its content does not match its hash`, files: names.length, lines: lines.length };
      }
      lines.push({ file: name, line: i + 1, ...checked });
    }
  }
  const seen = new Set(lines.map((l) => l.seq));
  let prev: Checked | { seq: number; hash: string; file: null; line: 0 } = { seq: 0, hash: GENESIS_HASH, file: null, line: 0 };
  for (const l of lines) {
    const where = `line ${l.line} of ${l.file} (seq ${l.seq})`;
    const fail = (problem: AuditProblem, at: { file: string; line: number; seq: number }, message: string): AuditVerdict => ({
      ok: false,
      problem,
      file: at.file,
      line: at.line,
      seq: at.seq,
      message,
      files: names.length,
      lines: lines.length,
    });
    if (l.seq <= prev.seq) return fail("reordered", l, `${where} was reordered: it comes after seq ${prev.seq}`);
    if (l.seq > prev.seq + 1) {
      const missing = prev.seq + 1;
      if (seen.has(missing)) return fail("reordered", l, `${where} was reordered: seq ${missing} comes later in the log`);
      const range = l.seq - 1 === missing ? `seq ${missing} is` : `seq ${missing}–${l.seq - 1} are`;
      return fail("removed", l, `lines were removed before ${where}: ${range} missing`);
    }
    if (l.prevHash !== prev.hash) {
      // The sequence is whole, so the line before was replaced by one with a hash of its own.
      if (prev.file === null) return fail("edited", l, `${where} was edited: the first line must follow the genesis hash`);
      return fail("edited", prev, `line ${prev.line} of ${prev.file} (seq ${prev.seq}) was edited: the next line's prev_hash does not match it`);
    }
    prev = l;
  }
  return { ok: true, files: names.length, lines: lines.length, last_seq: prev.seq };
}

/** `bun src/shared/audit-logging.ts verify <dir>`: one line, exit 0 when the chain is intact, 1 when not, 2 on misuse. */
function main(argv: string[]): number {
  const [command, dir] = argv;
  if (command !== "verify" || !dir || argv.length !== 2) {
    console.error("usage: bun src/shared/audit-logging.ts verify <audit dir>");
    return 2;
  }
  let verdict: AuditVerdict;
  try {
    verdict = verifyAuditDir(dir);
  } catch (e) {
    console.error(`audit verify: cannot read ${dir}: ${(e as Error).message}`);
    return 2;
  }
  if (verdict.ok) {
    console.log(`audit log intact: ${verdict.lines} lines in ${verdict.files} files, last seq ${verdict.last_seq}`);
    return 0;
  }
  console.log(`audit log broken: ${verdict.message}`);
  return 1;
}

if (import.meta.main) process.exit(main(process.argv.slice(2)));
