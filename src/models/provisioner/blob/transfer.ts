/**
 * Download one file of a repo into the HF cache's blob store:
 *
 * - to `<blob>.rbee-partial`, resumed from its saved part state (partial-state.ts), in `Range` parts;
 * - one connection streams the parts in order (one request for the whole run of untouched parts);
 *   more are added, up to maxParallelParts, while the rate per connection stays low and each
 *   addition raises the total rate; a new connection starts in the middle of what another has
 *   ahead (part-claims.ts);
 * - retries per connection with backoff on 5xx / 429 (Retry-After honoured) / resets / truncation;
 *   a connection that received nothing for stallTimeoutMs is aborted and retried (stall-watchdog.ts);
 * - the hash is computed in file order while the parts arrive (digest.ts);
 * - a background fdatasync every syncEveryBytes keeps the disk writing during the transfer;
 * - then fsync, atomic rename to the blob name, fsync of the directory.
 */
import { closeSync, renameSync, unlinkSync, writeSync } from "node:fs";
import { HiveError, errorMessage } from "../../../shared/errors.ts";
import type { Logger } from "../../../shared/logger.ts";
import { fsyncDir, type HfCacheRepo } from "../hf-cache.ts";
import type { HubClient, RemoteFile } from "../hub-client.ts";
import { TransientError, abortError, backoffMs, isTransient, sleepAbortable, type RetryPolicy } from "../retry.ts";
import { OrderedHasher, expectedDigest } from "./digest.ts";
import { BackgroundSync, fsyncFd } from "./fd-io.ts";
import { PartClaims } from "./part-claims.ts";
import { StateSaver, doneBytes, openPartial, partLen, type PartState } from "./partial-state.ts";
import { checkedBody } from "./run-response.ts";
import { StallWatchdog, type Connection } from "./stall-watchdog.ts";

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
  /** Told of each retry (metrics); `stalled` when nothing arrived for stallTimeoutMs. */
  onRetry?: (retry: { file: string; stalled: boolean }) => void;
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
}

export interface BlobDownloadResult {
  transferredBytes: number;
  resumedBytes: number;
  retries: number;
  stalls: number;
}

/** Where one stream stands: the part it writes into, and the bytes its current request brought. */
interface StreamCursor {
  part: number;
  got: number;
}

export function downloadBlob(req: BlobDownloadRequest, opts: BlobDownloadOptions): Promise<BlobDownloadResult> {
  return new BlobTransfer(req, opts).run();
}

class BlobTransfer {
  private readonly file: RemoteFile;
  private fd = -1;
  private parts: PartState[] = [];
  private claims!: PartClaims;
  private hasher!: OrderedHasher;
  private saver!: StateSaver;
  private sync!: BackgroundSync;
  private watchdog!: StallWatchdog;
  /** The caller's signal, or the first fatal error of any stream. */
  private readonly inner = new AbortController();
  private readonly result: BlobDownloadResult = { transferredBytes: 0, resumedBytes: 0, retries: 0, stalls: 0 };
  private readonly streams: Promise<void>[] = [];
  private live = 0;
  private fatal: unknown = null;

  constructor(
    private readonly req: BlobDownloadRequest,
    private readonly opts: BlobDownloadOptions,
  ) {
    this.file = req.file;
  }

  async run(): Promise<BlobDownloadResult> {
    const tStart = performance.now();
    expectedDigest(this.file); // no checksum known: fail before touching the disk
    this.resume();
    const unlink = this.followCallerAbort();
    this.watchdog = new StallWatchdog(this.opts.stallTimeoutMs);
    const growth = this.startStreams();
    try {
      for (let k = 0; k < this.streams.length; k++) await this.streams[k];
      clearInterval(growth);
      if (this.fatal !== null) throw this.fatal;
      if (this.req.signal.aborted) throw abortError(this.req.signal);
      await this.finish(tStart);
      return this.result;
    } finally {
      clearInterval(growth);
      this.watchdog.stop();
      unlink();
      await this.release();
    }
  }

  /** Open the partial file where a previous run left it (or afresh) and hash what is on disk. */
  private resume(): void {
    const { fd, state } = openPartial(this.req.cache, this.file, this.opts);
    this.fd = fd;
    this.parts = state.parts;
    this.result.resumedBytes = doneBytes(this.parts);
    this.claims = new PartClaims(this.parts);
    this.hasher = new OrderedHasher(expectedDigest(this.file).algo, fd, this.file.size, this.parts);
    this.hasher.kick();
    this.saver = new StateSaver(this.req.cache.partialStatePath(this.file.etag), state, this.opts.stateFlushIntervalMs, this.opts.logger, this.file.path);
    this.sync = new BackgroundSync(fd, this.opts.syncEveryBytes);
  }

  private followCallerAbort(): () => void {
    const outer = this.req.signal;
    const onAbort = () => this.inner.abort(outer.reason);
    if (outer.aborted) this.inner.abort(outer.reason);
    else outer.addEventListener("abort", onAbort, { once: true });
    return () => outer.removeEventListener("abort", onAbort);
  }

  /**
   * Open the first streams, then add one while each is slow, as long as the previous addition
   * raised the total rate and nothing is being retried (a rate-limited or failing host gets no
   * more connections). Returns the probe's timer.
   */
  private startStreams(): ReturnType<typeof setInterval> {
    const max = Math.max(1, this.opts.maxParallelParts);
    for (let k = Math.min(max, Math.max(1, this.opts.initialParallelParts)); k > 0 && this.addStream(); k--);
    let probeBytes = 0;
    let probeAt = performance.now();
    let probeRetries = 0;
    let rateBeforeAdd = -1;
    let growing = this.live < max;
    const probe = setInterval(() => {
      const now = performance.now();
      const rate = ((this.result.transferredBytes - probeBytes) * 1000) / Math.max(1, now - probeAt);
      const calm = this.result.retries === probeRetries;
      probeBytes = this.result.transferredBytes;
      probeAt = now;
      probeRetries = this.result.retries;
      if (!growing || !calm || this.live === 0 || this.live >= max || rate >= this.opts.addPartBelowBytesPerSec * this.live) return;
      if (rateBeforeAdd >= 0 && rate < rateBeforeAdd * 1.1) growing = false;
      else if (this.addStream()) rateBeforeAdd = rate;
    }, Math.max(1, this.opts.parallelProbeMs));
    probe.unref?.();
    return probe;
  }

  /** Add a connection at the part pick() chooses; false when there is nothing left to take. */
  private addStream(): boolean {
    const first = this.claims.pick();
    if (first < 0 || this.inner.signal.aborted) return false;
    this.claims.claim(first);
    this.live++;
    this.streams.push(
      Promise.resolve(first) // start after the caller's other launches have claimed their parts
        .then((i) => this.runStream(i))
        .catch((e) => {
          if (this.fatal === null) this.fatal = e;
          this.inner.abort(e);
        })
        .finally(() => this.live--),
    );
    return true;
  }

  /** One connection: request a run of parts, stream it; on a transient failure back off and go on where it stopped. */
  private async runStream(first: number): Promise<void> {
    const cur: StreamCursor = { part: first, got: 0 };
    let failures = 0;
    for (;;) {
      if (this.claims.complete(cur.part)) {
        const next = this.claims.pick();
        if (next < 0) return;
        this.claims.claim(next);
        cur.part = next;
        failures = 0;
      }
      if (this.inner.signal.aborted) throw abortError(this.inner.signal);
      const conn = this.watchdog.open(this.inner.signal);
      cur.got = 0;
      try {
        await this.streamRun(cur, conn);
      } catch (e) {
        failures = cur.got > 0 ? 1 : failures + 1;
        await this.backOff(e, conn, cur, failures);
      } finally {
        this.watchdog.close(conn);
      }
    }
  }

  /** One request for part `cur.part` and the run of untouched parts after it, written as it arrives. */
  private async streamRun(cur: StreamCursor, conn: Connection): Promise<void> {
    const last = this.claims.runEnd(cur.part);
    const from = this.parts[cur.part]!.start + this.parts[cur.part]!.done;
    const to = this.parts[last]!.end;
    const { client, repo, commit } = this.req;
    const opened = await client.openFile(repo, commit, this.file.path, { start: from, end: to }, conn.ctrl.signal);
    const reader = (await checkedBody(opened, this.file, commit, from, to)).getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        conn.lastActivity = performance.now();
        const whole = this.write(value, cur, last);
        this.sync.maybeStart();
        this.saver.save();
        if (!whole) break; // the next part belongs to another stream
      }
    } finally {
      reader.cancel().catch(() => {});
    }
    if (!this.claims.complete(cur.part)) throw new TransientError(`connection closed after ${cur.got} bytes`);
  }

  /** Write a chunk at the cursor, moving into the next parts of the run; false when it reached a part another stream holds. */
  private write(value: Uint8Array, cur: StreamCursor, last: number): boolean {
    const len = value.length; // the hasher may detach `value`
    for (let off = 0; off < len; ) {
      let part = this.parts[cur.part]!;
      if (part.done >= partLen(part)) {
        if (cur.part === last || this.claims.isClaimed(cur.part + 1)) return false;
        this.claims.claim(++cur.part);
        part = this.parts[cur.part]!;
      }
      const take = Math.min(partLen(part) - part.done, len - off);
      const piece = off === 0 && take === len ? value : value.subarray(off, off + take);
      const pos = part.start + part.done;
      for (let w = 0; w < take; ) w += writeSync(this.fd, piece, w, take - w, pos + w);
      part.done += take;
      off += take;
      cur.got += take;
      this.hasher.onWrite(pos, piece);
      this.result.transferredBytes += take;
      this.req.onBytes?.(take);
      this.sync.written(take);
    }
    return true;
  }

  /** After a failed request: rethrow what is final, else wait the backoff (or the server's Retry-After). */
  private async backOff(e: unknown, conn: Connection, cur: StreamCursor, failures: number): Promise<void> {
    if (this.req.signal.aborted) throw abortError(this.req.signal);
    if (this.inner.signal.aborted && !conn.stalled) throw abortError(this.inner.signal);
    const err = conn.stalled ? new TransientError(`stalled: no data for ${this.opts.stallTimeoutMs} ms`) : e;
    if (conn.stalled) this.result.stalls++;
    if (!isTransient(err)) throw err;
    const path = this.file.path;
    if (failures > this.opts.policy.maxRetries) {
      throw new HiveError(502, "HUB_UNREACHABLE", `downloading ${path} failed after ${failures} attempts: ${errorMessage(err)}`, {
        file: path,
        attempts: failures,
      });
    }
    const delay = err instanceof TransientError && err.retryAfterMs !== undefined ? err.retryAfterMs : backoffMs(failures - 1, this.opts.policy);
    this.result.retries++;
    this.opts.onRetry?.({ file: path, stalled: conn.stalled });
    const part = this.parts[cur.part]!;
    this.opts.logger.debug("part retry", { file: path, start: part.start, done: part.done, attempt: failures, delay_ms: delay, error: errorMessage(err) });
    this.saver.save(true);
    await sleepAbortable(delay, this.inner.signal);
  }

  /** Every part is in: check the digest, fsync, rename into the blob name, fsync the directory. */
  private async finish(tStart: number): Promise<void> {
    const { cache } = this.req;
    const file = this.file;
    const missing = this.claims.firstIncomplete();
    if (missing >= 0) throw new Error(`internal: part ${missing} of ${file.path} left incomplete`);
    const tTransfer = performance.now();
    const actual = await this.hasher.finish();
    const tHash = performance.now();
    await this.sync.idle();
    const { algo, hex: expected } = expectedDigest(file);
    if (actual !== expected) {
      this.closeFd();
      cache.removePartial(file.etag);
      throw new HiveError(502, "CHECKSUM_MISMATCH", `${file.path}: ${algo} is ${actual}, the hub says ${expected}; the download was discarded`, {
        file: file.path,
        expected,
        actual,
      });
    }
    await fsyncFd(this.fd);
    const tSync = performance.now();
    this.closeFd();
    renameSync(cache.partialPath(file.etag), cache.blobPath(file.etag));
    fsyncDir(cache.blobsDir);
    this.opts.logger.debug("blob complete", {
      file: file.path,
      bytes: file.size,
      transfer_ms: Math.round(tTransfer - tStart),
      hash_tail_ms: Math.round(tHash - tTransfer),
      fsync_ms: Math.round(tSync - tHash),
      streams: this.streams.length,
      retries: this.result.retries,
    });
    this.saver.close();
    try {
      unlinkSync(cache.partialStatePath(file.etag));
    } catch {
      /* gone */
    }
  }

  /** After success or failure: no read in flight, the part state saved, the fd closed. */
  private async release(): Promise<void> {
    await this.hasher.idle();
    if (this.fd < 0) return;
    this.saver.save(true);
    this.saver.close();
    await this.sync.idle();
    this.closeFd();
  }

  private closeFd(): void {
    closeSync(this.fd);
    this.fd = -1;
  }
}
