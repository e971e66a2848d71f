/**
 * Download one file of a repo into the HF cache's blob store:
 *
 * - to `<blob>.rbee-partial`, reserved to the final size up front (fallocate, else sparse), in
 *   `Range` parts; per-part progress is saved in `<blob>.rbee-partial.json` (≤ stateFlushIntervalMs
 *   behind the data, never ahead) so a restart, even after SIGKILL, resumes every part where it stood;
 * - one connection streams the parts in order (one request for the whole run of untouched parts);
 *   more are added, up to maxParallelParts, while the rate per connection stays low and each
 *   addition raises the total rate; a new connection starts in the middle of what another has ahead;
 * - retries per connection with backoff on 5xx / 429 (Retry-After honoured) / resets / truncation;
 * - a stall detector aborts and retries a connection that received nothing for stallTimeoutMs;
 * - the hash (sha256 for LFS files, git blob sha1 otherwise) is computed in file order on the event
 *   loop: bytes that arrive in order straight from memory, the rest (other connections, a resumed
 *   file) read back from the page cache once the written prefix reaches it;
 * - a background fdatasync every syncEveryBytes keeps the disk writing during the transfer;
 * - then fsync, atomic rename to the blob name, fsync of the directory. */
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
  writeSync,
  writeFileSync,
} from "node:fs";
import { HiveError, errorMessage } from "../../shared/errors.ts";
import type { Logger } from "../../shared/logger.ts";
import type { HfCacheRepo } from "./hf-cache.ts";
import { fsyncDir } from "./hf-cache.ts";
import { preallocate } from "./native-fs.ts";
import type { HubClient, RemoteFile } from "./hub-client.ts";
import { TransientError, abortError, backoffMs, isTransient, sleepAbortable, type RetryPolicy } from "./retry.ts";

export interface BlobDownloadOptions {
  partSizeBytes: number;
  /** Most streams (connections) at once. */
  maxParallelParts: number;
  /** Streams opened at the start; more are added up to maxParallelParts while they are slow. */
  initialParallelParts: number;
  /** A stream is added when the rate per stream is below this (bytes/s)... */
  addPartBelowBytesPerSec: number;
  /** ...measured over this interval. */
  parallelProbeMs: number;
  policy: RetryPolicy;
  stallTimeoutMs: number;
  stateFlushIntervalMs: number;
  /** Start a background fdatasync after this many bytes written (keeps the final fsync short). */
  syncEveryBytes: number;
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

/** End of the contiguous written prefix of the file. */
function writtenPrefix(parts: PartState[], size: number): number {
  for (const part of parts) if (part.done < partLen(part)) return part.start + part.done;
  return size;
}

/** Hashes the file in order on the event loop while parts are written out of order. */
class OrderedHasher {
  private hashed = 0;
  private busy: Promise<void> | null = null;
  private readonly h: Hash;
  private buf: Uint8Array | null = null;
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
      const buf = (this.buf ??= new Uint8Array(HASH_READ_BYTES));
      const n = Math.min(end - this.hashed, buf.length);
      const got = await p.read(this.fd, buf, 0, n, this.hashed);
      if (got <= 0) throw new Error(`short read at ${this.hashed}`);
      this.h.update(buf.subarray(0, got));
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
  const hasher = new OrderedHasher(algo, fd, file.size, parts);
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

  // Parts are claimed by one stream each. A stream requests its part and the run of untouched,
  // unclaimed parts after it in one request, and claims each of those as it reaches it, so one
  // stream reads the file in order (hashed from memory); a stream added later starts in the middle
  // of the largest run another stream is heading into.
  const n = parts.length;
  const claimed = new Array<boolean>(n).fill(false);
  const complete = (i: number) => parts[i]!.done >= partLen(parts[i]!);
  const free = (i: number) => !claimed[i] && !complete(i);
  /** Where a stream should start: the first run no stream is heading into, else the middle of the largest run; -1 when none. */
  const pick = (): number => {
    let split = -1;
    let splitLen = 0;
    for (let i = 0; i < n; ) {
      if (!free(i)) {
        i++;
        continue;
      }
      let j = i + 1;
      while (j < n && free(j) && parts[j]!.done === 0) j++;
      const fed = parts[i]!.done === 0 && i > 0 && claimed[i - 1] && !complete(i - 1);
      if (!fed) return i;
      if (j - i > splitLen) {
        splitLen = j - i;
        split = i + ((j - i) >> 1);
      }
      i = j;
    }
    return split;
  };

  const runStream = async (first: number) => {
    let i = first;
    claimed[i] = true;
    let failures = 0;
    for (;;) {
      if (complete(i)) {
        i = pick();
        if (i < 0) return;
        claimed[i] = true;
        failures = 0;
      }
      if (inner.signal.aborted) throw abortError(inner.signal);
      let last = i;
      while (last + 1 < n && !claimed[last + 1] && parts[last + 1]!.done === 0) last++;
      const from = parts[i]!.start + parts[i]!.done;
      const to = parts[last]!.end;
      const a: Active = { lastActivity: performance.now(), ctrl: new AbortController(), stalled: false };
      const onAbort = () => a.ctrl.abort(inner.signal.reason);
      inner.signal.addEventListener("abort", onAbort, { once: true });
      active.add(a);
      let got = 0;
      try {
        const opened = await client.openFile(req.repo, req.commit, file.path, { start: from, end: to }, a.ctrl.signal);
        checkHubHeaders(opened.hub);
        const res = opened.response;
        if (res.status === 206) {
          const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get("content-range") ?? "");
          if (!m || Number(m[1]) !== from) {
            await res.body?.cancel().catch(() => {});
            throw new TransientError(`unexpected Content-Range "${res.headers.get("content-range")}" for bytes=${from}-${to}`);
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
          read: for (;;) {
            const { done, value } = await reader.read();
            if (done) break;
            a.lastActivity = performance.now();
            const len = value.length; // the hasher may detach `value`
            for (let off = 0; off < len; ) {
              let part = parts[i]!;
              if (part.done >= partLen(part)) {
                // into the next part, unless another stream has taken it
                if (i === last || claimed[i + 1]) break read;
                claimed[++i] = true;
                part = parts[i]!;
              }
              const take = Math.min(partLen(part) - part.done, len - off);
              const piece = off === 0 && take === len ? value : value.subarray(off, off + take);
              const pos = part.start + part.done;
              for (let w = 0; w < take; ) w += writeSync(fd, piece, w, take - w, pos + w);
              part.done += take;
              off += take;
              got += take;
              hasher.onWrite(pos, piece);
              result.transferredBytes += take;
              req.onBytes?.(take);
              unsyncedBytes += take;
            }
            if (unsyncedBytes >= opts.syncEveryBytes && syncing === null) {
              unsyncedBytes = 0;
              syncing = p.fdatasync(fd).catch(() => {}).finally(() => (syncing = null));
            }
            persist();
          }
        } finally {
          reader.cancel().catch(() => {});
        }
        if (!complete(i)) throw new TransientError(`connection closed after ${got} bytes`);
      } catch (e) {
        if (req.signal.aborted) throw abortError(req.signal);
        if (inner.signal.aborted && !a.stalled) throw abortError(inner.signal);
        const err = a.stalled ? new TransientError(`stalled: no data for ${opts.stallTimeoutMs} ms`) : e;
        if (a.stalled) result.stalls++;
        if (!isTransient(err)) throw err;
        if (got > 0) failures = 0;
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
        opts.logger.debug("part retry", { file: file.path, start: parts[i]!.start, done: parts[i]!.done, attempt: failures, delay_ms: delay, error: errorMessage(err) });
        persist(true);
        await sleepAbortable(delay, inner.signal);
      } finally {
        active.delete(a);
        inner.signal.removeEventListener("abort", onAbort);
      }
    }
  };

  let fatal: unknown = null;
  const streams: Promise<void>[] = [];
  let live = 0;
  const launch = (): boolean => {
    const i = pick();
    if (i < 0 || inner.signal.aborted) return false;
    claimed[i] = true;
    live++;
    streams.push(
      Promise.resolve(i) // start after the caller's other launches have claimed their parts
        .then(runStream)
        .catch((e) => {
          if (fatal === null) fatal = e;
          inner.abort(e);
        })
        .finally(() => live--),
    );
    return true;
  };
  const maxStreams = Math.max(1, opts.maxParallelParts);
  for (let k = Math.min(maxStreams, Math.max(1, opts.initialParallelParts)); k > 0 && launch(); k--);
  // Add a stream while each one is slow, as long as the previous addition raised the total rate
  // and nothing is being retried (a rate-limited or failing host gets no more connections).
  let probeBytes = 0;
  let probeAt = performance.now();
  let probeRetries = 0;
  let rateBeforeAdd = -1;
  let growing = live < maxStreams;
  const probe = setInterval(() => {
    const now = performance.now();
    const rate = ((result.transferredBytes - probeBytes) * 1000) / Math.max(1, now - probeAt);
    const calm = result.retries === probeRetries;
    probeBytes = result.transferredBytes;
    probeAt = now;
    probeRetries = result.retries;
    if (!growing || !calm || live === 0 || live >= maxStreams || rate >= opts.addPartBelowBytesPerSec * live) return;
    if (rateBeforeAdd >= 0 && rate < rateBeforeAdd * 1.1) growing = false;
    else if (launch()) rateBeforeAdd = rate;
  }, Math.max(1, opts.parallelProbeMs));
  probe.unref?.();

  try {
    for (let k = 0; k < streams.length; k++) await streams[k];
    clearInterval(probe);
    if (fatal !== null) throw fatal;
    if (req.signal.aborted) throw abortError(req.signal);
    for (let i = 0; i < n; i++) if (!complete(i)) throw new Error(`internal: part ${i} of ${file.path} left incomplete`);

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
      streams: streams.length,
      retries: result.retries,
    });
    try {
      unlinkSync(statePath);
    } catch {
      /* gone */
    }
    return result;
  } finally {
    clearInterval(probe);
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
