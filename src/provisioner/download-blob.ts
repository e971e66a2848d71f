/**
 * Download one file of a repo into the HF cache's blob store:
 *
 * - to `<blob>.rbee-partial`, preallocated (sparse) to the final size, in parallel `Range` parts;
 *   per-part progress is saved in `<blob>.rbee-partial.json` (≤ stateFlushIntervalMs behind the
 *   data, never ahead) so a restart, even after SIGKILL, resumes every part where it stood;
 * - retries per part with backoff on 5xx / 429 (Retry-After honoured) / resets / truncation;
 * - a stall detector aborts and retries a part that received nothing for stallTimeoutMs;
 * - the hash (sha256 for LFS files, git blob sha1 otherwise) is computed in file order while the
 *   parts arrive (hashing the in-order part straight from memory, catching up from the page cache
 *   otherwise), so verification costs almost nothing after the last byte;
 * - then fsync, atomic rename to the blob name, fsync of the directory.
 */
import { createHash, type Hash } from "node:crypto";
import {
  closeSync,
  existsSync,
  fdatasync as fdatasyncCb,
  fsync as fsyncCb,
  ftruncateSync,
  mkdirSync,
  openSync,
  read as readCb,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  write as writeCb,
  writeFileSync,
} from "node:fs";
import { HiveError, errorMessage } from "../shared/errors.ts";
import type { Logger } from "../shared/logger.ts";
import type { HfCacheRepo } from "./hf-cache.ts";
import { fsyncDir } from "./hf-cache.ts";
import { preallocate } from "./native-fs.ts";
import type { HubClient, RemoteFile } from "./hub-client.ts";
import { TransientError, abortError, backoffMs, isTransient, sleepAbortable, type RetryPolicy } from "./retry.ts";

export interface BlobDownloadOptions {
  partSizeBytes: number;
  maxParallelParts: number;
  policy: RetryPolicy;
  stallTimeoutMs: number;
  stateFlushIntervalMs: number;
  /** Start a background fdatasync after this many bytes written (keeps the final fsync short). */
  syncEveryBytes: number;
  /** Files at least this large are hashed on a worker thread (reading the page cache); 0 = never. */
  workerHashMinBytes: number;
  /** Reserve the file's blocks with fallocate(2) where available (Linux). */
  preallocate: boolean;
  logger: Logger;
}

export interface BlobDownloadRequest {
  client: HubClient;
  repo: string;
  commit: string;
  file: RemoteFile;
  cache: HfCacheRepo;
  signal: AbortSignal;
  /** Fresh bytes written (network), called per chunk. */
  onBytes?: (n: number) => void;
  onRetry?: (info: { attempt: number; delayMs: number; error: string; stalled: boolean }) => void;
}

export interface BlobDownloadResult {
  transferredBytes: number;
  resumedBytes: number;
  retries: number;
  stalls: number;
}

interface PartState {
  start: number;
  /** inclusive */
  end: number;
  done: number;
}

interface PartialState {
  version: 1;
  etag: string;
  size: number;
  parts: PartState[];
}

const HASH_READ_BYTES = 8 << 20;

const p = {
  write: (fd: number, buf: Uint8Array, off: number, len: number, pos: number) =>
    new Promise<number>((res, rej) => writeCb(fd, buf, off, len, pos, (e, n) => (e ? rej(e) : res(n)))),
  read: (fd: number, buf: Uint8Array, off: number, len: number, pos: number) =>
    new Promise<number>((res, rej) => readCb(fd, buf, off, len, pos, (e, n) => (e ? rej(e) : res(n)))),
  fsync: (fd: number) => new Promise<void>((res, rej) => fsyncCb(fd, (e) => (e ? rej(e) : res()))),
  fdatasync: (fd: number) => new Promise<void>((res, rej) => fdatasyncCb(fd, (e) => (e ? rej(e) : res()))),
};

function partLen(part: PartState): number {
  return part.end - part.start + 1;
}

/** Which hash verifies a file, and its expected hex digest. */
export function expectedDigest(file: RemoteFile): { algo: "sha256" | "git-sha1"; hex: string } {
  if (file.sha256) return { algo: "sha256", hex: file.sha256 };
  if (file.gitOid) return { algo: "git-sha1", hex: file.gitOid };
  throw new HiveError(502, "HUB_BAD_RESPONSE", `no checksum known for ${file.path}`);
}

export function newHasher(algo: "sha256" | "git-sha1", size: number): Hash {
  if (algo === "sha256") return createHash("sha256");
  const h = createHash("sha1");
  h.update(`blob ${size}\0`);
  return h;
}

/** Hash a complete file on disk (used for blobs found in the cache). */
export async function hashFile(
  path: string,
  file: RemoteFile,
  signal?: AbortSignal,
  onBytes?: (n: number) => void,
): Promise<string> {
  const { algo } = expectedDigest(file);
  const h = newHasher(algo, file.size);
  const fd = openSync(path, "r");
  const buf = new Uint8Array(HASH_READ_BYTES);
  try {
    let pos = 0;
    for (;;) {
      if (signal?.aborted) throw abortError(signal);
      const n = await p.read(fd, buf, 0, buf.length, pos);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
      pos += n;
      onBytes?.(n);
    }
  } finally {
    closeSync(fd);
  }
  return h.digest("hex");
}

interface Hasher {
  /** A chunk was written at `pos` (the write completed). */
  onWrite(pos: number, chunk: Uint8Array): void;
  /** Data may be available beyond what was hashed (e.g. resumed parts). */
  kick(): void;
  /** Every part is complete: the hex digest of the whole file. */
  finish(): Promise<string>;
  /** Stop background work before the file is closed. */
  idle(): Promise<void>;
}

/** End of the contiguous written prefix of the file. */
function writtenPrefix(parts: PartState[], size: number): number {
  for (const part of parts) if (part.done < partLen(part)) return part.start + part.done;
  return size;
}

/**
 * One shared hash worker per process (unref'd, so it never keeps the process alive). Each job
 * reads the contiguous written prefix of its partial file back from the page cache and hashes it,
 * so the event loop only moves bytes.
 */
const HASH_WORKER_SOURCE = `
const { createHash } = require("node:crypto");
const { openSync, readSync, closeSync } = require("node:fs");
const jobs = new Map();
const buf = new Uint8Array(${HASH_READ_BYTES});
function pump(id, j) {
  while (j.hashed < j.target) {
    const n = readSync(j.fd, buf, 0, Math.min(buf.length, j.target - j.hashed), j.hashed);
    if (n <= 0) throw new Error("short read at " + j.hashed);
    j.h.update(buf.subarray(0, n));
    j.hashed += n;
  }
  if (j.hashed >= j.size) {
    closeSync(j.fd);
    jobs.delete(id);
    postMessage({ type: "digest", id, hex: j.h.digest("hex") });
  }
}
self.onmessage = (ev) => {
  const m = ev.data;
  const j = jobs.get(m.id);
  try {
    if (m.type === "init") {
      const h = createHash(m.algo === "sha256" ? "sha256" : "sha1");
      if (m.algo !== "sha256") h.update("blob " + m.size + "\\0");
      const job = { fd: openSync(m.path, "r"), h, hashed: 0, target: 0, size: m.size };
      jobs.set(m.id, job);
      pump(m.id, job);
    } else if (m.type === "prefix" && j) {
      j.target = Math.max(j.target, m.end);
      pump(m.id, j);
    } else if (m.type === "stop") {
      if (j) {
        closeSync(j.fd);
        jobs.delete(m.id);
      }
      postMessage({ type: "stopped", id: m.id });
    }
  } catch (e) {
    if (j) {
      try { closeSync(j.fd); } catch {}
      jobs.delete(m.id);
    }
    postMessage({ type: "error", id: m.id, message: String((e && e.message) || e) });
  }
};
`;

interface HashJobListener {
  onDigest(hex: string): void;
  onStopped(): void;
  onError(message: string): void;
}

let sharedWorker: Worker | null = null;
const hashJobs = new Map<number, HashJobListener>();
let nextHashJob = 1;

function hashWorker(): Worker {
  if (sharedWorker) return sharedWorker;
  const url = URL.createObjectURL(new Blob([HASH_WORKER_SOURCE], { type: "application/javascript" }));
  const w = new Worker(url);
  w.onmessage = (ev: MessageEvent) => {
    const m = ev.data as { type: string; id: number; hex?: string; message?: string };
    const l = hashJobs.get(m.id);
    if (!l) return;
    if (m.type === "digest") l.onDigest(m.hex!);
    else if (m.type === "stopped") l.onStopped();
    else if (m.type === "error") l.onError(m.message ?? "hash worker error");
  };
  w.onerror = (e: ErrorEvent) => {
    // The worker is gone: fail every job (they fall back to inline hashing) and start afresh next time.
    sharedWorker = null;
    for (const l of hashJobs.values()) l.onError(e.message || "hash worker crashed");
    hashJobs.clear();
  };
  w.unref();
  sharedWorker = w;
  return w;
}

/** Hashes on the shared worker thread; falls back to hashing the finished file inline if it fails. */
class WorkerHasher implements Hasher {
  private readonly id = nextHashJob++;
  private readonly worker: Worker;
  private posted = 0;
  private failed: string | null = null;
  private readonly digest = deferred<string>();
  private stopped: Deferred<void> | null = null;
  private done = false;
  private static readonly STEP = 4 << 20;

  constructor(
    algo: "sha256" | "git-sha1",
    private readonly path: string,
    private readonly size: number,
    private readonly parts: PartState[],
    private readonly file: RemoteFile,
  ) {
    this.worker = hashWorker();
    hashJobs.set(this.id, {
      onDigest: (hex) => this.digest.resolve(hex),
      onStopped: () => this.stopped?.resolve(),
      onError: (message) => this.fail(message),
    });
    this.worker.postMessage({ type: "init", id: this.id, path, algo, size });
  }

  private fail(message: string): void {
    if (this.failed) return;
    this.failed = message;
    this.digest.resolve("");
    this.stopped?.resolve();
  }

  onWrite(): void {
    this.kick();
  }

  kick(): void {
    if (this.failed || this.done) return;
    const prefix = writtenPrefix(this.parts, this.size);
    if (prefix >= this.posted + WorkerHasher.STEP || (prefix === this.size && prefix > this.posted)) {
      this.posted = prefix;
      this.worker.postMessage({ type: "prefix", id: this.id, end: prefix });
    }
  }

  async finish(): Promise<string> {
    this.kick();
    const hex = await this.digest.promise;
    this.done = true;
    hashJobs.delete(this.id);
    if (!this.failed) return hex;
    return hashFile(this.path, this.file);
  }

  async idle(): Promise<void> {
    if (this.done) return;
    this.done = true;
    if (!this.failed) {
      this.stopped = deferred<void>();
      this.worker.postMessage({ type: "stop", id: this.id });
      await Promise.race([this.stopped.promise, new Promise((r) => setTimeout(r, 1000))]);
    }
    hashJobs.delete(this.id);
  }
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(v: T): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** Hashes the file in order on the event loop while parts are written out of order. */
class OrderedHasher implements Hasher {
  private hashed = 0;
  private busy: Promise<void> | null = null;
  private readonly h: Hash;
  private readonly buf = new Uint8Array(HASH_READ_BYTES);
  private failure: unknown = null;

  constructor(
    algo: "sha256" | "git-sha1",
    private readonly fd: number,
    private readonly size: number,
    private readonly parts: PartState[],
  ) {
    this.h = newHasher(algo, size);
  }

  private prefix(): number {
    return writtenPrefix(this.parts, this.size);
  }

  /** A chunk was written at `pos` (the write completed). */
  onWrite(pos: number, chunk: Uint8Array): void {
    if (this.busy === null && pos === this.hashed) {
      this.h.update(chunk);
      this.hashed += chunk.length;
      return;
    }
    this.kick();
  }

  kick(): void {
    if (this.busy !== null || this.failure !== null) return;
    if (this.prefix() <= this.hashed) return;
    this.busy = this.catchUp()
      .catch((e) => {
        this.failure = e;
      })
      .finally(() => {
        this.busy = null;
      });
  }

  private async catchUp(): Promise<void> {
    for (let end = this.prefix(); end > this.hashed; end = this.prefix()) {
      const n = Math.min(end - this.hashed, this.buf.length);
      const got = await p.read(this.fd, this.buf, 0, n, this.hashed);
      if (got <= 0) throw new Error(`short read at ${this.hashed}`);
      this.h.update(this.buf.subarray(0, got));
      this.hashed += got;
    }
  }

  /** Resolves when no read is in flight (before the fd is closed). */
  async idle(): Promise<void> {
    while (this.busy) await this.busy;
  }

  /** Call when every part is complete: hashes what is left and returns the hex digest. */
  async finish(): Promise<string> {
    for (;;) {
      if (this.busy) await this.busy;
      if (this.failure) throw this.failure;
      if (this.hashed >= this.size) return this.h.digest("hex");
      this.kick();
      if (!this.busy) throw new Error("hasher cannot make progress");
    }
  }
}

function loadState(path: string, file: RemoteFile): PartialState | null {
  try {
    const s = JSON.parse(readFileSync(path, "utf8")) as PartialState;
    if (s?.version !== 1 || s.etag !== file.etag || s.size !== file.size || !Array.isArray(s.parts)) return null;
    let next = 0;
    for (const part of s.parts) {
      if (
        !Number.isSafeInteger(part.start) ||
        !Number.isSafeInteger(part.end) ||
        !Number.isSafeInteger(part.done) ||
        part.start !== next ||
        part.end < part.start ||
        part.done < 0 ||
        part.done > partLen(part)
      ) {
        return null;
      }
      next = part.end + 1;
    }
    return next === file.size ? s : null;
  } catch {
    return null;
  }
}

function freshState(file: RemoteFile, partSize: number): PartialState {
  const parts: PartState[] = [];
  const size = Math.max(1, partSize);
  for (let start = 0; start < file.size; start += size) {
    parts.push({ start, end: Math.min(file.size, start + size) - 1, done: 0 });
  }
  return { version: 1, etag: file.etag, size: file.size, parts };
}

function saveState(path: string, state: PartialState): void {
  const tmp = `${path}.tmp`; // one writer per blob in a process; a leftover is simply overwritten
  writeFileSync(tmp, JSON.stringify(state));
  renameSync(tmp, path);
}

/** Bytes of a partial download already on disk (per its state file), 0 when none. */
export function partialBytes(cache: HfCacheRepo, file: RemoteFile): number {
  const state = loadState(cache.partialStatePath(file.etag), file);
  if (!state || !existsSync(cache.partialPath(file.etag))) return 0;
  return state.parts.reduce((s, part) => s + part.done, 0);
}

/** Disk blocks a partial download already holds (preallocated or written), 0 when none. */
export function partialAllocatedBytes(cache: HfCacheRepo, file: RemoteFile): number {
  try {
    const st = statSync(cache.partialPath(file.etag));
    return Math.min(file.size, st.blocks * 512);
  } catch {
    return 0;
  }
}

export async function downloadBlob(req: BlobDownloadRequest, opts: BlobDownloadOptions): Promise<BlobDownloadResult> {
  const { file, cache, client } = req;
  const tStart = performance.now();
  const { algo, hex: expected } = expectedDigest(file);
  const blobPath = cache.blobPath(file.etag);
  const partialPath = cache.partialPath(file.etag);
  const statePath = cache.partialStatePath(file.etag);
  mkdirSync(cache.blobsDir, { recursive: true });

  let state = loadState(statePath, file);
  let fd: number;
  if (state && existsSync(partialPath) && statSync(partialPath).size === file.size) {
    fd = openSync(partialPath, "r+");
  } else {
    state = freshState(file, opts.partSizeBytes);
    fd = openSync(partialPath, "w+");
    const reserved = opts.preallocate ? preallocate(fd, file.size) : "unsupported";
    if (reserved === "nospace") {
      closeSync(fd);
      cache.removePartial(file.etag);
      throw new HiveError(507, "INSUFFICIENT_DISK", `no space left to reserve ${file.size} bytes for ${file.path}`, {
        required_bytes: file.size,
        available_bytes: null,
        path: cache.blobsDir,
      });
    }
    if (reserved !== "reserved") ftruncateSync(fd, file.size);
    saveState(statePath, state);
  }
  const parts = state.parts;
  const resumedBytes = parts.reduce((s, part) => s + part.done, 0);
  const result: BlobDownloadResult = { transferredBytes: 0, resumedBytes, retries: 0, stalls: 0 };
  let hasher: Hasher;
  try {
    hasher =
      opts.workerHashMinBytes > 0 && file.size >= opts.workerHashMinBytes
        ? new WorkerHasher(algo, partialPath, file.size, parts, file)
        : new OrderedHasher(algo, fd, file.size, parts);
  } catch {
    hasher = new OrderedHasher(algo, fd, file.size, parts);
  }
  hasher.kick(); // hash what a previous run left on disk

  // Internal abort: the caller's signal, or the first fatal error of any part.
  const inner = new AbortController();
  const onOuterAbort = () => inner.abort(req.signal.reason);
  if (req.signal.aborted) inner.abort(req.signal.reason);
  else req.signal.addEventListener("abort", onOuterAbort, { once: true });

  let lastStateSave = performance.now();
  let unsyncedBytes = 0;
  let syncing: Promise<void> | null = null;
  const persist = (force = false) => {
    const now = performance.now();
    if (!force && now - lastStateSave < opts.stateFlushIntervalMs) return;
    lastStateSave = now;
    try {
      saveState(statePath, state!);
    } catch (e) {
      opts.logger.warn("could not save download state", { file: file.path, error: errorMessage(e) });
    }
  };

  interface Active {
    lastActivity: number;
    ctrl: AbortController;
    stalled: boolean;
  }
  const active = new Set<Active>();
  const watchdogEvery = Math.max(5, Math.min(1000, Math.floor(opts.stallTimeoutMs / 4)));
  const watchdog = setInterval(() => {
    const now = performance.now();
    for (const a of active) {
      if (!a.stalled && now - a.lastActivity > opts.stallTimeoutMs) {
        a.stalled = true;
        a.ctrl.abort(new TransientError(`no data for ${opts.stallTimeoutMs} ms`));
      }
    }
  }, watchdogEvery);

  const checkHubHeaders = (h: { repoCommit: string | null; linkedEtag: string | null; linkedSize: number | null }) => {
    if (h.repoCommit && h.repoCommit !== req.commit) {
      throw new HiveError(502, "HUB_BAD_RESPONSE", `hub served ${file.path} from commit ${h.repoCommit}, expected ${req.commit}`);
    }
    if (file.sha256 && h.linkedEtag && /^[0-9a-f]{64}$/.test(h.linkedEtag) && h.linkedEtag !== file.sha256) {
      throw new HiveError(502, "HUB_BAD_RESPONSE", `hub's X-Linked-Etag for ${file.path} (${h.linkedEtag}) differs from the tree (${file.sha256})`);
    }
    if (h.linkedSize !== null && h.linkedSize !== file.size) {
      throw new HiveError(502, "HUB_BAD_RESPONSE", `hub's X-Linked-Size for ${file.path} (${h.linkedSize}) differs from the tree (${file.size})`);
    }
  };

  const runPart = async (part: PartState) => {
    let failures = 0;
    while (part.done < partLen(part)) {
      if (inner.signal.aborted) throw abortError(inner.signal);
      const a: Active = { lastActivity: performance.now(), ctrl: new AbortController(), stalled: false };
      const onAbort = () => a.ctrl.abort(inner.signal.reason);
      inner.signal.addEventListener("abort", onAbort, { once: true });
      active.add(a);
      const before = part.done;
      try {
        const from = part.start + part.done;
        const opened = await client.openFile(req.repo, req.commit, file.path, { start: from, end: part.end }, a.ctrl.signal);
        checkHubHeaders(opened.hub);
        const res = opened.response;
        if (res.status === 206) {
          const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get("content-range") ?? "");
          if (!m || Number(m[1]) !== from) {
            await res.body?.cancel().catch(() => {});
            throw new TransientError(`unexpected Content-Range "${res.headers.get("content-range")}" for bytes=${from}-${part.end}`);
          }
        } else if (res.status === 200) {
          if (from !== 0) {
            await res.body?.cancel().catch(() => {});
            throw new HiveError(502, "HUB_BAD_RESPONSE", `file host ignored Range for ${file.path}`);
          }
        } else {
          await res.body?.cancel().catch(() => {});
          throw new TransientError(`unexpected status ${res.status}`, undefined, res.status);
        }
        if (!res.body) throw new TransientError("response without body");
        const reader = res.body.getReader();
        try {
          for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            const remaining = partLen(part) - part.done;
            const chunk = value.length > remaining ? value.subarray(0, remaining) : value;
            const pos = part.start + part.done;
            let off = 0;
            while (off < chunk.length) off += await p.write(fd, chunk, off, chunk.length - off, pos + off);
            part.done += chunk.length;
            a.lastActivity = performance.now();
            hasher.onWrite(pos, chunk);
            result.transferredBytes += chunk.length;
            req.onBytes?.(chunk.length);
            unsyncedBytes += chunk.length;
            if (unsyncedBytes >= opts.syncEveryBytes && syncing === null) {
              unsyncedBytes = 0;
              syncing = p.fdatasync(fd).catch(() => {}).finally(() => (syncing = null));
            }
            persist();
            if (part.done >= partLen(part)) break;
          }
        } finally {
          reader.cancel().catch(() => {});
        }
        if (part.done < partLen(part)) throw new TransientError(`connection closed after ${part.done - before} bytes`);
      } catch (e) {
        if (req.signal.aborted) throw abortError(req.signal);
        if (inner.signal.aborted && !a.stalled) throw abortError(inner.signal);
        const err = a.stalled ? new TransientError(`stalled: no data for ${opts.stallTimeoutMs} ms`) : e;
        if (a.stalled) result.stalls++;
        if (!isTransient(err)) throw err;
        if (part.done > before) failures = 0;
        failures++;
        if (failures > opts.policy.maxRetries) {
          throw new HiveError(502, "HUB_UNREACHABLE", `downloading ${file.path} failed after ${failures} attempts: ${errorMessage(err)}`, {
            file: file.path,
            attempts: failures,
          });
        }
        const delay = err instanceof TransientError && err.retryAfterMs !== undefined ? err.retryAfterMs : backoffMs(failures - 1, opts.policy);
        result.retries++;
        req.onRetry?.({ attempt: failures, delayMs: delay, error: errorMessage(err), stalled: a.stalled });
        opts.logger.debug("part retry", { file: file.path, start: part.start, done: part.done, attempt: failures, delay_ms: delay, error: errorMessage(err) });
        persist(true);
        await sleepAbortable(delay, inner.signal);
      } finally {
        active.delete(a);
        inner.signal.removeEventListener("abort", onAbort);
      }
    }
  };

  let fatal: unknown = null;
  try {
    const queue = parts.filter((part) => part.done < partLen(part));
    const workers = Array.from({ length: Math.min(Math.max(1, opts.maxParallelParts), queue.length) }, async () => {
      for (let part = queue.shift(); part; part = queue.shift()) {
        try {
          await runPart(part);
        } catch (e) {
          if (fatal === null) fatal = e;
          inner.abort(e);
          return;
        }
      }
    });
    await Promise.all(workers);
    if (fatal !== null) throw fatal;
    if (req.signal.aborted) throw abortError(req.signal);

    const tTransfer = performance.now();
    const actual = await hasher.finish();
    const tHash = performance.now();
    if (syncing) await syncing;
    if (actual !== expected) {
      closeSync(fd);
      fd = -1;
      cache.removePartial(file.etag);
      throw new HiveError(502, "CHECKSUM_MISMATCH", `${file.path}: ${algo} is ${actual}, the hub says ${expected}; the download was discarded`, {
        file: file.path,
        expected,
        actual,
      });
    }
    await p.fsync(fd);
    const tSync = performance.now();
    closeSync(fd);
    fd = -1;
    renameSync(partialPath, blobPath);
    fsyncDir(cache.blobsDir);
    opts.logger.debug("blob complete", {
      file: file.path,
      bytes: file.size,
      transfer_ms: Math.round(tTransfer - tStart),
      hash_tail_ms: Math.round(tHash - tTransfer),
      fsync_ms: Math.round(tSync - tHash),
      retries: result.retries,
    });
    try {
      unlinkSync(statePath);
    } catch {
      /* gone */
    }
    return result;
  } finally {
    clearInterval(watchdog);
    req.signal.removeEventListener("abort", onOuterAbort);
    await hasher.idle();
    if (fd >= 0) {
      persist(true);
      if (syncing) await syncing;
      closeSync(fd);
    }
  }
}
