/**
 * Making one planned file's blob present and verified: a blob another job of this process is
 * fetching is waited for; a blob found in the cache is re-hashed once (unless this process wrote
 * it) and fetched again when it fails; a missing one is downloaded (its partial resumed), and once
 * more after a checksum mismatch.
 */
import { unlinkSync } from "node:fs";
import { HiveError, errorMessage, isHiveError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/logger.ts";
import { expectedDigest, hashFile } from "./blob/digest.ts";
import { partialBytes } from "./blob/partial-state.ts";
import { downloadBlob, type BlobDownloadOptions } from "./blob/transfer.ts";
import type { HubClient } from "./hub-client.ts";
import type { PlannedFile } from "./plan.ts";
import type { ProvisionRun } from "./provision-run.ts";
import { abortError } from "./retry.ts";

export interface BlobFetcherOptions {
  client: HubClient;
  transfer: BlobDownloadOptions;
  verifyExistingBlobs: boolean;
  maxChecksumRetries: number;
  logger: Logger;
}

export class BlobFetcher {
  /** Blobs this process downloaded or verified (no re-hash needed). */
  private readonly verified = new Set<string>();
  /** Blob downloads in flight in this process (two refs can share a file). */
  private readonly inflight = new Map<string, Promise<unknown>>();

  constructor(private readonly o: BlobFetcherOptions) {}

  fetching(blobPath: string): boolean {
    return this.inflight.has(blobPath);
  }

  async ensure(run: ProvisionRun, f: PlannedFile): Promise<void> {
    // Another job of this process is fetching the same blob: wait for it, then look again.
    for (let other = this.inflight.get(f.blobPath); other; other = this.inflight.get(f.blobPath)) {
      await Promise.race([other.catch(() => {}), abortPromise(run.signal)]);
    }
    if (await this.reuseCached(run, f)) return;
    if (run.plan.offline) throw new HiveError(502, "HUB_UNREACHABLE", `${f.remote.path} is not in the cache and the hub is unreachable`);
    const job = this.fetch(run, f);
    this.inflight.set(f.blobPath, job);
    try {
      await job;
    } finally {
      this.inflight.delete(f.blobPath);
    }
  }

  /** A complete blob already in the cache, verified: counted as reused. False when there is none (any more). */
  private async reuseCached(run: ProvisionRun, f: PlannedFile): Promise<boolean> {
    const { cache } = run.plan;
    const { remote } = f;
    if (cache.blobSize(remote.etag) !== remote.size) return false;
    if (this.o.verifyExistingBlobs && !this.verified.has(f.blobPath)) {
      const progress = run.progress;
      progress.phase = "verifying";
      const base = progress.bytes_downloaded;
      const actual = await hashFile(f.blobPath, remote, run.signal, (n) => {
        progress.bytes_downloaded += n; // a verified byte counts as present
        run.emit();
      });
      progress.bytes_downloaded = base;
      if (actual === expectedDigest(remote).hex) this.verified.add(f.blobPath);
      else this.discard(f, run.plan.repo);
    }
    if (cache.blobSize(remote.etag) !== remote.size) return false;
    run.stats.bytes_reused += remote.size;
    run.progress.bytes_downloaded += remote.size;
    return true;
  }

  private discard(f: PlannedFile, repo: string): void {
    this.o.logger.warn("cached blob fails verification; downloading it again", { repo, file: f.remote.path });
    try {
      unlinkSync(f.blobPath);
    } catch {
      /* gone */
    }
  }

  private async fetch(run: ProvisionRun, f: PlannedFile): Promise<void> {
    const { plan, progress, stats } = run;
    const base = progress.bytes_downloaded;
    for (let attempt = 0; ; attempt++) {
      progress.phase = "downloading";
      progress.bytes_downloaded = base + partialBytes(plan.cache, f.remote);
      run.emit();
      try {
        const r = await downloadBlob(
          { client: this.o.client, repo: plan.repo, commit: plan.commit, file: f.remote, cache: plan.cache, signal: run.signal, onBytes: (n) => run.transferred(n) },
          this.o.transfer,
        );
        stats.bytes_resumed += r.resumedBytes;
        stats.retries += r.retries;
        stats.stalls += r.stalls;
        this.verified.add(f.blobPath);
        progress.bytes_downloaded = base + f.remote.size;
        return;
      } catch (e) {
        if (isHiveError(e) && e.code === "CHECKSUM_MISMATCH" && attempt < this.o.maxChecksumRetries && !run.signal.aborted) {
          this.o.logger.warn("checksum mismatch; downloading the file again", { repo: plan.repo, file: f.remote.path, error: errorMessage(e) });
          continue;
        }
        throw e;
      }
    }
  }
}

function abortPromise(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(abortError(signal));
    else signal.addEventListener("abort", () => reject(abortError(signal)), { once: true });
  });
}
