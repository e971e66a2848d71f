/**
 * provisioner: turn a model_ref into verified files on disk, in the Hugging Face cache layout
 * under `modelsDir` (which IS the HF cache dir), and describe them for the catalog.
 *
 *   plan(ref)       resolve revision → commit, list files, pick the file set (network: 2+ API calls;
 *                   falls back to the local cache when the hub is unreachable)
 *   provision(plan) disk check, reuse/verify blobs already in the cache, download the rest, link
 *                   the snapshot, write refs/<revision>; returns what `ModelCatalog.register` takes
 *   registerLocal   describe a `file:` model (no network), only under modelsDir / allowedRoots (async, bounded walk)
 */
import { mkdirSync, statfsSync, unlinkSync } from "node:fs";
import { HiveError, errorMessage, isHiveError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/logger.ts";
import { silentLogger } from "../../shared/logger.ts";
import type { CatalogFile, RegisterInput } from "../model-catalog/catalog.ts";
import { DEFAULT_REVISION, isCommitSha, parseModelRef, validateRevision } from "../model-catalog/model-ref.ts";
import { downloadBlob, expectedDigest, hashFile, partialAllocatedBytes, partialBytes } from "./download-blob.ts";
import { HfCacheRepo } from "./hf-cache.ts";
import { DEFAULT_HF_ENDPOINT, HubClient, type FetchFn, type RemoteFile } from "./hub-client.ts";
import { DEFAULT_RETRY_POLICY, abortError } from "./retry.ts";
import { DEFAULT_QUANT_PREFERENCE, selectFiles, type Selection } from "./select.ts";
import { DEFAULT_WALK_LIMITS, describeLocalModel, nodeWalkFs, type WalkFs, type WalkLimits } from "./local-model.ts";

export type { WalkFs, WalkLimits } from "./local-model.ts";

export interface StatfsLike {
  bavail: number | bigint;
  bsize: number | bigint;
}

export interface ProvisionerOptions {
  /** The models dir = the HF cache dir (default of the daemon: `<data dir>/models`). Required. */
  modelsDir: string;
  /** Hub base URL (env HF_ENDPOINT). Default https://huggingface.co */
  endpoint?: string;
  /** Hub token (env HF_TOKEN); only ever sent to the endpoint's own origin. */
  token?: string;
  /** Injected fetch (default globalThis.fetch). */
  fetch?: FetchFn;
  /** Extra roots a `file:` model may live under (modelsDir is always allowed). Default []. */
  allowedRoots?: string[];
  /** Default GGUF pick order. Default Q4_K_M, Q4_0, Q8_0, Q5_K_M, Q4_K_S, Q5_0, Q6_K, Q3_K_M, F16, BF16. */
  quantPreference?: string[];
  /** Range part size. Default 64 MiB. */
  partSizeBytes?: number;
  /** Most connections (streams of parts) at once per file. Default 8. */
  maxParallelParts?: number;
  /**
   * Connections opened at the start of a file. Default 1: one stream reads the file in order (hashed
   * from memory as it arrives); more are added up to maxParallelParts while the rate per connection
   * stays below addPartBelowBytesPerSec and each addition raises the total rate.
   */
  initialParallelParts?: number;
  /** Add a connection while each one is slower than this (bytes/s). Default 100 MB/s. */
  addPartBelowBytesPerSec?: number;
  /** How often the rate is measured to decide on adding a connection. Default 1 s. */
  parallelProbeMs?: number;
  /** Retries per request / per part without progress. Default 6. */
  maxRetries?: number;
  /** First backoff delay, doubled per retry (±25 % jitter). Default 500 ms. */
  retryBaseMs?: number;
  /** Backoff cap. Default 30 s. */
  retryMaxMs?: number;
  /** Cap on a server's Retry-After. Default 60 s. */
  retryAfterMaxMs?: number;
  /** A part that receives nothing this long is aborted and retried. Default 30 s. */
  stallTimeoutMs?: number;
  /** Timeout of one hub API request. Default 30 s. */
  requestTimeoutMs?: number;
  /** Free space that must remain after the download. Default 1 GiB. */
  diskMarginBytes?: number;
  /** Injected statfs (tests). Default fs.statfsSync. */
  statfs?: (path: string) => StatfsLike;
  /** Re-hash blobs found in the cache (not written by this process) before use. Default true. */
  verifyExistingBlobs?: boolean;
  /** Whole-file re-downloads after a checksum mismatch. Default 1. */
  maxChecksumRetries?: number;
  /** How often part progress is saved for resume. Default 25 ms. */
  stateFlushIntervalMs?: number;
  /** Background fdatasync cadence while downloading (keeps the disk busy during the transfer). Default 32 MiB. */
  syncEveryBytes?: number;
  /** Reserve each file's disk blocks up front with fallocate(2) (Linux; else sparse). Default true. */
  preallocate?: boolean;
  /** Never touch the network (like HF_HUB_OFFLINE): only complete cached snapshots. Default false. */
  offline?: boolean;
  /** Bounds of a `file:` directory walk. Default depth 16, 10 000 entries, 10 s. */
  walkLimits?: Partial<WalkLimits>;
  /** File system calls of the `file:` walk (tests gate them). Default node:fs/promises. */
  walkFs?: WalkFs;
  /** Clock of the walk's time bound (ms). Default Date.now. */
  now?: () => number;
  logger?: Logger;
}

export interface PlannedFile {
  remote: RemoteFile;
  blobPath: string;
  snapshotPath: string;
}

export interface ModelPlan {
  modelRef: string;
  revision: string;
  repo: string;
  commit: string;
  /** True when the hub was not reachable and the plan comes from the local cache. */
  offline: boolean;
  selection: Selection;
  files: PlannedFile[];
  bytesTotal: number;
  localPath: string;
  cache: HfCacheRepo;
}

export interface ProvisionProgress {
  phase: "verifying" | "downloading";
  /** Bytes of the model on disk (reused + resumed + transferred). */
  bytes_downloaded: number;
  bytes_total: number;
  /** Bytes fetched over the network by this call. */
  bytes_transferred: number;
  file: string;
  files_done: number;
  files_total: number;
}

export interface ProvisionResult extends RegisterInput {
  revision: string;
  stats: {
    bytes_total: number;
    bytes_transferred: number;
    bytes_reused: number;
    bytes_resumed: number;
    retries: number;
    stalls: number;
  };
}

export interface ProvisionOptions {
  signal?: AbortSignal;
  onProgress?: (p: ProvisionProgress) => void;
}

export const DEFAULTS = {
  endpoint: DEFAULT_HF_ENDPOINT,
  quantPreference: DEFAULT_QUANT_PREFERENCE,
  partSizeBytes: 64 * 1024 * 1024,
  maxParallelParts: 8,
  initialParallelParts: 1,
  addPartBelowBytesPerSec: 100e6,
  parallelProbeMs: 1000,
  maxRetries: DEFAULT_RETRY_POLICY.maxRetries,
  retryBaseMs: DEFAULT_RETRY_POLICY.retryBaseMs,
  retryMaxMs: DEFAULT_RETRY_POLICY.retryMaxMs,
  retryAfterMaxMs: DEFAULT_RETRY_POLICY.retryAfterMaxMs,
  stallTimeoutMs: 30_000,
  requestTimeoutMs: 30_000,
  diskMarginBytes: 1024 * 1024 * 1024,
  verifyExistingBlobs: true,
  maxChecksumRetries: 1,
  stateFlushIntervalMs: 25,
  syncEveryBytes: 32 * 1024 * 1024,
  preallocate: true,
} as const;

export class Provisioner {
  readonly client: HubClient;
  readonly modelsDir: string;
  private readonly o: Required<Omit<ProvisionerOptions, "token" | "fetch" | "statfs" | "logger" | "endpoint" | "walkLimits" | "walkFs" | "now">>;
  private readonly statfs: (path: string) => StatfsLike;
  private readonly walkLimits: WalkLimits;
  private readonly walkFs: WalkFs;
  private readonly now: () => number;
  private readonly logger: Logger;
  /** Blobs this process downloaded and verified (no re-hash needed). */
  private readonly verified = new Set<string>();
  /** Blob downloads in flight in this process (two refs can share a file). */
  private readonly inflight = new Map<string, Promise<unknown>>();
  /** Bytes promised to downloads in flight (disk check of concurrent jobs). */
  private reservedBytes = 0;

  constructor(opts: ProvisionerOptions) {
    if (!opts.modelsDir) throw new Error("Provisioner: modelsDir is required");
    this.modelsDir = opts.modelsDir;
    this.logger = opts.logger ?? silentLogger;
    this.statfs = opts.statfs ?? ((p) => statfsSync(p));
    this.walkLimits = { ...DEFAULT_WALK_LIMITS, ...opts.walkLimits };
    this.walkFs = opts.walkFs ?? nodeWalkFs;
    this.now = opts.now ?? Date.now;
    this.o = {
      modelsDir: opts.modelsDir,
      allowedRoots: opts.allowedRoots ?? [],
      quantPreference: opts.quantPreference ?? [...DEFAULTS.quantPreference],
      partSizeBytes: opts.partSizeBytes ?? DEFAULTS.partSizeBytes,
      maxParallelParts: opts.maxParallelParts ?? DEFAULTS.maxParallelParts,
      initialParallelParts: opts.initialParallelParts ?? DEFAULTS.initialParallelParts,
      addPartBelowBytesPerSec: opts.addPartBelowBytesPerSec ?? DEFAULTS.addPartBelowBytesPerSec,
      parallelProbeMs: opts.parallelProbeMs ?? DEFAULTS.parallelProbeMs,
      maxRetries: opts.maxRetries ?? DEFAULTS.maxRetries,
      retryBaseMs: opts.retryBaseMs ?? DEFAULTS.retryBaseMs,
      retryMaxMs: opts.retryMaxMs ?? DEFAULTS.retryMaxMs,
      retryAfterMaxMs: opts.retryAfterMaxMs ?? DEFAULTS.retryAfterMaxMs,
      stallTimeoutMs: opts.stallTimeoutMs ?? DEFAULTS.stallTimeoutMs,
      requestTimeoutMs: opts.requestTimeoutMs ?? DEFAULTS.requestTimeoutMs,
      diskMarginBytes: opts.diskMarginBytes ?? DEFAULTS.diskMarginBytes,
      verifyExistingBlobs: opts.verifyExistingBlobs ?? DEFAULTS.verifyExistingBlobs,
      maxChecksumRetries: opts.maxChecksumRetries ?? DEFAULTS.maxChecksumRetries,
      stateFlushIntervalMs: opts.stateFlushIntervalMs ?? DEFAULTS.stateFlushIntervalMs,
      syncEveryBytes: opts.syncEveryBytes ?? DEFAULTS.syncEveryBytes,
      preallocate: opts.preallocate ?? DEFAULTS.preallocate,
      offline: opts.offline ?? false,
    };
    this.client = new HubClient({
      endpoint: opts.endpoint ?? DEFAULTS.endpoint,
      token: opts.token,
      fetch: opts.fetch,
      requestTimeoutMs: this.o.requestTimeoutMs,
      maxRetries: this.o.maxRetries,
      retryBaseMs: this.o.retryBaseMs,
      retryMaxMs: this.o.retryMaxMs,
      retryAfterMaxMs: this.o.retryAfterMaxMs,
      logger: this.logger,
    });
  }

  /** Resolve an `hf:` ref to a commit and a file set. Errors: 400 INVALID_INPUT / AMBIGUOUS_MODEL_FILES /
   * UNSUPPORTED_MODEL_FORMAT, 404 MODEL_NOT_FOUND / REVISION_NOT_FOUND / MODEL_FILE_NOT_FOUND,
   * 403 MODEL_GATED, 502 HUB_UNREACHABLE / HUB_BAD_RESPONSE / INCOMPLETE_SHARD_SET. */
  async plan(modelRef: string, opts: { revision?: string; signal?: AbortSignal } = {}): Promise<ModelPlan> {
    const parsed = parseModelRef(modelRef);
    if (parsed.provider !== "hf") {
      throw new HiveError(400, "INVALID_INPUT", `plan() takes hf: refs; "${modelRef}" is registered with registerLocal()`);
    }
    const revision = validateRevision(opts.revision ?? DEFAULT_REVISION);
    const cache = new HfCacheRepo(this.modelsDir, parsed.repo);
    let commit: string;
    let files: RemoteFile[];
    let offline = false;
    try {
      if (this.o.offline) throw new HiveError(502, "HUB_UNREACHABLE", "offline mode: the hub is not contacted");
      commit = (await this.client.resolveRevision(parsed.repo, revision, opts.signal)).commit;
      files = await this.client.listFiles(parsed.repo, commit, opts.signal);
    } catch (e) {
      if (!(isHiveError(e) && e.code === "HUB_UNREACHABLE")) throw e;
      const local = this.localSnapshot(cache, revision);
      if (!local) {
        if (this.o.offline) {
          throw new HiveError(502, "HUB_UNREACHABLE", `${parsed.repo}@${revision} is not in the local cache and offline mode is on`);
        }
        throw e;
      }
      this.logger.warn("hub unreachable; using the cached snapshot", { repo: parsed.repo, revision, commit: local.commit, error: e.message });
      ({ commit, files } = local);
      offline = true;
    }
    const selection = selectFiles(parsed.repo, parsed.selector, files, this.o.quantPreference);
    const planned = selection.files.map((remote) => ({
      remote,
      snapshotPath: cache.snapshotPath(commit, remote.path), // 400 on traversal in a hub file name
      blobPath: cache.blobPath(remote.etag),
    }));
    const localPath = selection.primary ? cache.snapshotPath(commit, selection.primary) : cache.snapshotDir(commit);
    return {
      modelRef,
      revision,
      repo: parsed.repo,
      commit,
      offline,
      selection,
      files: planned,
      bytesTotal: planned.reduce((s, f) => s + f.remote.size, 0),
      localPath,
      cache,
    };
  }

  /**
   * Make every planned file present and verified, link the snapshot, write the ref.
   * Errors: 507 INSUFFICIENT_DISK (details required_bytes, available_bytes), 502 CHECKSUM_MISMATCH /
   * HUB_UNREACHABLE, 403/404 from the hub, AbortError when `signal` aborts (partials kept).
   */
  async provision(plan: ModelPlan, opts: ProvisionOptions = {}): Promise<ProvisionResult> {
    const { cache } = plan;
    const signal = opts.signal ?? new AbortController().signal;
    mkdirSync(cache.blobsDir, { recursive: true });
    const stats = { bytes_total: plan.bytesTotal, bytes_transferred: 0, bytes_reused: 0, bytes_resumed: 0, retries: 0, stalls: 0 };
    const progress: ProvisionProgress = {
      phase: "verifying",
      bytes_downloaded: 0,
      bytes_total: plan.bytesTotal,
      bytes_transferred: 0,
      file: "",
      files_done: 0,
      files_total: plan.files.length,
    };
    const emit = () => opts.onProgress?.({ ...progress });

    // What is missing, and the disk it needs.
    const missing = plan.files.filter((f) => cache.blobSize(f.remote.etag) !== f.remote.size);
    // Blocks a partial download already holds (preallocated or written) are not needed again.
    const needed = missing.reduce((s, f) => s + f.remote.size - partialAllocatedBytes(cache, f.remote), 0);
    if (missing.length > 0 && plan.offline) {
      throw new HiveError(
        502,
        "HUB_UNREACHABLE",
        `the hub is unreachable and ${missing.length} file(s) of ${plan.repo}@${plan.commit.slice(0, 12)} are not in the cache: ${missing.map((f) => f.remote.path).join(", ")}`,
      );
    }
    this.checkDisk(needed);
    this.reservedBytes += needed;
    try {
      for (const f of plan.files) {
        if (signal.aborted) throw abortError(signal);
        progress.file = f.remote.path;
        await this.ensureBlob(plan, f, signal, progress, stats, emit);
        cache.linkSnapshot(plan.commit, f.remote.path, f.remote.etag);
        progress.files_done++;
        emit();
      }
      if (!isCommitSha(plan.revision) && !plan.offline) cache.writeRef(plan.revision, plan.commit);
    } finally {
      this.reservedBytes -= needed;
    }

    const files: CatalogFile[] = plan.files.map((f) => ({
      path: f.remote.path,
      local_path: f.snapshotPath,
      size_bytes: f.remote.size,
      sha256: f.remote.sha256,
      git_oid: f.remote.gitOid,
      blob_path: f.blobPath,
    }));
    return {
      modelRef: plan.modelRef,
      revision: plan.revision,
      commit: plan.commit,
      local_path: plan.localPath,
      format: plan.selection.format,
      quantization: plan.selection.quantization,
      files,
      size_bytes: plan.bytesTotal,
      metadata: {
        repo: plan.repo,
        selected_by: plan.selection.selectedBy,
        primary_file: plan.selection.primary,
        offline: plan.offline,
        bytes_transferred: stats.bytes_transferred,
        bytes_reused: stats.bytes_reused,
      },
      stats,
    };
  }

  /** plan + provision. */
  async download(modelRef: string, opts: ProvisionOptions & { revision?: string } = {}): Promise<ProvisionResult> {
    const plan = await this.plan(modelRef, { revision: opts.revision, signal: opts.signal });
    return this.provision(plan, opts);
  }

  /** Remove the partial downloads of a plan's files (cancel with purge). Complete blobs stay. */
  purgePartials(plan: ModelPlan): void {
    for (const f of plan.files) {
      if (this.inflight.has(f.blobPath)) continue;
      plan.cache.removePartial(f.remote.etag);
    }
  }

  /**
   * Describe a `file:` model for the catalog (see local-model.ts): the path and every file under it
   * must resolve (symlinks included) under modelsDir or an allowed root; a directory is walked
   * asynchronously within `walkLimits`. Errors: 400 INVALID_INPUT, 404 MODEL_NOT_FOUND,
   * 413 MODEL_DIR_TOO_LARGE.
   */
  registerLocal(modelRef: string): Promise<RegisterInput> {
    return describeLocalModel(modelRef, {
      roots: [this.modelsDir, ...this.o.allowedRoots],
      limits: this.walkLimits,
      fs: this.walkFs,
      now: this.now,
      logger: this.logger,
    });
  }

  /** Throws 507 INSUFFICIENT_DISK when `needed` + margin does not fit. */
  checkDisk(needed: number): void {
    if (needed <= 0) return;
    const st = this.statfs(this.modelsDir);
    const free = Number(st.bavail) * Number(st.bsize);
    const available = Math.max(0, free - this.reservedBytes);
    const required = needed + this.o.diskMarginBytes;
    if (required > available) {
      throw new HiveError(
        507,
        "INSUFFICIENT_DISK",
        `not enough disk space in ${this.modelsDir}: the download needs ${needed} bytes plus a ${this.o.diskMarginBytes}-byte margin (${required}), ${available} are available`,
        { required_bytes: required, available_bytes: available, download_bytes: needed, margin_bytes: this.o.diskMarginBytes, path: this.modelsDir },
      );
    }
  }

  private localSnapshot(cache: HfCacheRepo, revision: string): { commit: string; files: RemoteFile[] } | null {
    const commit = isCommitSha(revision) ? revision : cache.readRef(revision);
    if (!commit) return null;
    const files = cache.snapshotFiles(commit);
    return files && files.length > 0 ? { commit, files } : null;
  }

  private async ensureBlob(
    plan: ModelPlan,
    f: PlannedFile,
    signal: AbortSignal,
    progress: ProvisionProgress,
    stats: ProvisionResult["stats"],
    emit: () => void,
  ): Promise<void> {
    const { cache } = plan;
    const { remote } = f;
    // Another job of this process is fetching the same blob: wait for it, then look again.
    for (let other = this.inflight.get(f.blobPath); other; other = this.inflight.get(f.blobPath)) {
      await Promise.race([other.catch(() => {}), abortPromise(signal)]);
    }
    if (cache.blobSize(remote.etag) === remote.size) {
      if (this.o.verifyExistingBlobs && !this.verified.has(f.blobPath)) {
        progress.phase = "verifying";
        const base = progress.bytes_downloaded;
        const actual = await hashFile(f.blobPath, remote, signal, (n) => {
          progress.bytes_downloaded += n; // a verified byte counts as present
          emit();
        });
        progress.bytes_downloaded = base;
        if (actual !== expectedDigest(remote).hex) {
          this.logger.warn("cached blob fails verification; downloading it again", { repo: plan.repo, file: remote.path });
          try {
            unlinkSync(f.blobPath);
          } catch {
            /* gone */
          }
        } else {
          this.verified.add(f.blobPath);
        }
      }
      if (cache.blobSize(remote.etag) === remote.size) {
        stats.bytes_reused += remote.size;
        progress.bytes_downloaded += remote.size;
        return;
      }
    }
    if (plan.offline) throw new HiveError(502, "HUB_UNREACHABLE", `${remote.path} is not in the cache and the hub is unreachable`);

    const job = this.fetchBlob(plan, f, signal, progress, stats, emit);
    this.inflight.set(f.blobPath, job);
    try {
      await job;
    } finally {
      this.inflight.delete(f.blobPath);
    }
  }

  private async fetchBlob(
    plan: ModelPlan,
    f: PlannedFile,
    signal: AbortSignal,
    progress: ProvisionProgress,
    stats: ProvisionResult["stats"],
    emit: () => void,
  ): Promise<void> {
    const base = progress.bytes_downloaded;
    for (let attempt = 0; ; attempt++) {
      progress.phase = "downloading";
      progress.bytes_downloaded = base + partialBytes(plan.cache, f.remote);
      emit();
      try {
        const r = await downloadBlob(
          {
            client: this.client,
            repo: plan.repo,
            commit: plan.commit,
            file: f.remote,
            cache: plan.cache,
            signal,
            onBytes: (n) => {
              progress.bytes_downloaded += n;
              progress.bytes_transferred += n;
              stats.bytes_transferred += n;
              emit();
            },
          },
          {
            partSizeBytes: this.o.partSizeBytes,
            maxParallelParts: this.o.maxParallelParts,
            initialParallelParts: this.o.initialParallelParts,
            addPartBelowBytesPerSec: this.o.addPartBelowBytesPerSec,
            parallelProbeMs: this.o.parallelProbeMs,
            policy: this.client.policy,
            stallTimeoutMs: this.o.stallTimeoutMs,
            stateFlushIntervalMs: this.o.stateFlushIntervalMs,
            syncEveryBytes: this.o.syncEveryBytes,
            preallocate: this.o.preallocate,
            logger: this.logger,
          },
        );
        stats.bytes_resumed += r.resumedBytes;
        stats.retries += r.retries;
        stats.stalls += r.stalls;
        this.verified.add(f.blobPath);
        progress.bytes_downloaded = base + f.remote.size;
        return;
      } catch (e) {
        if (isHiveError(e) && e.code === "CHECKSUM_MISMATCH" && attempt < this.o.maxChecksumRetries && !signal.aborted) {
          this.logger.warn("checksum mismatch; downloading the file again", { repo: plan.repo, file: f.remote.path, error: errorMessage(e) });
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
