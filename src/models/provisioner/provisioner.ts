/**
 * provisioner: turn a model_ref into verified files on disk, in the Hugging Face cache layout
 * under `modelsDir` (which IS the HF cache dir), and describe them for the catalog.
 *
 *   plan(ref)       resolve revision → commit, list files, pick the file set (plan.ts)
 *   provision(plan) disk check, reuse/verify blobs already in the cache, download the rest
 *                   (blob-fetcher.ts, blob/), link the snapshot, write refs/<revision>; returns
 *                   what `ModelCatalog.register` takes
 *   footprint(plan) what the model is made of before any download (GGUF header by range requests)
 *   registerLocal   describe a `file:` model (no network), only under modelsDir / allowedRoots
 *                   (local-model.ts: async, bounded walk)
 *
 * Refs arrive parsed (model-ref.ts) and revisions validated; `download()` is the one entry that
 * takes a model_ref as typed (the bench, tests).
 */
import { mkdirSync } from "node:fs";
import { HiveError, invalidInput } from "../../shared/errors.ts";
import type { Logger } from "../../shared/logger.ts";
import { silentLogger } from "../../shared/logger.ts";
import type { RegisterInput } from "../model-catalog/catalog.ts";
import { DEFAULT_REVISION, isCommitSha, optionalRevision, parseModelRef, type FileModelRef, type HfModelRef } from "../model-catalog/model-ref.ts";
import { partialAllocatedBytes } from "./blob/partial-state.ts";
import { BlobFetcher } from "./blob-fetcher.ts";
import { DiskBudget } from "./disk-budget.ts";
import { HfCacheRepo } from "./hf-cache.ts";
import { HubClient } from "./hub-client.ts";
import { DEFAULT_WALK_LIMITS, describeLocalModel, nodeWalkFs, type LocalModelOptions } from "./local-model.ts";
import { tuningOf, type ProvisionerOptions } from "./options.ts";
import { buildPlan, listRevision, type ModelPlan } from "./plan.ts";
import { planFootprint } from "./plan-footprint.ts";
import type { ModelFootprint } from "../../shared/model-source.ts";
import { ProvisionRun, type ProvisionProgress, type ProvisionStats } from "./provision-run.ts";
import { abortError } from "./retry.ts";

export type { ProvisionerOptions, ProvisionerSettings, StatfsLike } from "./options.ts";
export type { ModelPlan, PlannedFile } from "./plan.ts";
export type { ProvisionProgress } from "./provision-run.ts";
export type { WalkFs, WalkLimits } from "./local-model.ts";

export interface ProvisionResult extends RegisterInput {
  revision: string;
  stats: ProvisionStats;
}

export interface ProvisionOptions {
  signal?: AbortSignal;
  onProgress?: (p: ProvisionProgress) => void;
}

export class Provisioner {
  readonly client: HubClient;
  readonly modelsDir: string;
  private readonly quantPreference: string[];
  private readonly logger: Logger;
  private readonly disk: DiskBudget;
  private readonly blobs: BlobFetcher;
  private readonly local: LocalModelOptions;

  constructor(opts: ProvisionerOptions) {
    if (!opts.modelsDir) throw new Error("Provisioner: modelsDir is required");
    this.modelsDir = opts.modelsDir;
    this.quantPreference = opts.quantPreference;
    this.logger = opts.logger ?? silentLogger;
    const tuning = tuningOf(opts);
    this.client = new HubClient({
      endpoint: opts.endpoint,
      token: opts.token,
      fetch: opts.fetch,
      requestTimeoutMs: tuning.requestTimeoutMs,
      policy: { maxRetries: opts.maxRetries, retryBaseMs: tuning.retryBaseMs, retryMaxMs: tuning.retryMaxMs, retryAfterMaxMs: tuning.retryAfterMaxMs },
      logger: this.logger,
    });
    this.disk = new DiskBudget(opts.modelsDir, opts.diskMarginBytes, opts.statfs);
    this.blobs = new BlobFetcher({
      client: this.client,
      transfer: {
        partSizeBytes: opts.partSizeBytes,
        maxParallelParts: opts.maxParallelParts,
        stallTimeoutMs: opts.stallTimeoutMs,
        policy: this.client.policy,
        logger: this.logger,
        initialParallelParts: tuning.initialParallelParts,
        addPartBelowBytesPerSec: tuning.addPartBelowBytesPerSec,
        parallelProbeMs: tuning.parallelProbeMs,
        stateFlushIntervalMs: tuning.stateFlushIntervalMs,
        syncEveryBytes: tuning.syncEveryBytes,
        preallocate: tuning.preallocate,
        onRetry: opts.onPartRetry,
      },
      verifyExistingBlobs: tuning.verifyExistingBlobs,
      maxChecksumRetries: tuning.maxChecksumRetries,
      logger: this.logger,
    });
    this.local = {
      roots: [opts.modelsDir, ...opts.allowedRoots],
      limits: { ...DEFAULT_WALK_LIMITS, ...opts.walkLimits },
      fs: opts.walkFs ?? nodeWalkFs,
      now: opts.now ?? Date.now,
      logger: this.logger,
    };
  }

  /** Resolve an `hf:` ref to a commit and a file set. Errors: 400 AMBIGUOUS_MODEL_FILES /
   * UNSUPPORTED_MODEL_FORMAT, 404 MODEL_NOT_FOUND / REVISION_NOT_FOUND / MODEL_FILE_NOT_FOUND,
   * 403 MODEL_GATED, 502 HUB_UNREACHABLE / HUB_BAD_RESPONSE / INCOMPLETE_SHARD_SET. */
  async plan(ref: HfModelRef, opts: { revision?: string; signal?: AbortSignal } = {}): Promise<ModelPlan> {
    const revision = opts.revision ?? DEFAULT_REVISION;
    const cache = new HfCacheRepo(this.modelsDir, ref.repo);
    const listing = await listRevision(this.client, cache, revision, opts.signal, this.logger);
    return buildPlan(ref, revision, cache, listing, this.quantPreference);
  }

  /**
   * What a planned model is made of, before any download (plan-footprint.ts): the GGUF header(s)
   * by range requests, or a safetensors config.json. Errors: the hub's (403, 404, 502) and
   * 400 INVALID_GGUF.
   */
  footprint(plan: ModelPlan, opts: { signal?: AbortSignal } = {}): Promise<ModelFootprint> {
    return planFootprint(plan, this.client, opts.signal);
  }

  /**
   * Make every planned file present and verified, link the snapshot, write the ref.
   * Errors: 507 INSUFFICIENT_DISK (details required_bytes, available_bytes), 502 CHECKSUM_MISMATCH /
   * HUB_UNREACHABLE, 403/404 from the hub, AbortError when `signal` aborts (partials kept).
   */
  async provision(plan: ModelPlan, opts: ProvisionOptions = {}): Promise<ProvisionResult> {
    const { cache } = plan;
    const run = new ProvisionRun(plan, opts.signal ?? new AbortController().signal, opts.onProgress);
    mkdirSync(cache.blobsDir, { recursive: true });
    const missing = plan.files.filter((f) => cache.blobSize(f.remote.etag) !== f.remote.size);
    if (missing.length > 0 && plan.offline) {
      const names = missing.map((f) => f.remote.path).join(", ");
      throw new HiveError(502, "HUB_UNREACHABLE", `the hub is unreachable and ${missing.length} file(s) of ${plan.repo}@${plan.commit.slice(0, 12)} are not in the cache: ${names}`);
    }
    // Blocks a partial download already holds (preallocated or written) are not needed again.
    const needed = missing.reduce((s, f) => s + f.remote.size - partialAllocatedBytes(cache, f.remote), 0);
    const reservation = this.disk.reserve(needed);
    try {
      for (const f of plan.files) {
        if (run.signal.aborted) throw abortError(run.signal);
        run.progress.file = f.remote.path;
        await this.blobs.ensure(run, f);
        cache.linkSnapshot(plan.commit, f.remote.path, f.remote.etag);
        run.progress.files_done++;
        run.emit();
      }
      if (!isCommitSha(plan.revision) && !plan.offline) cache.writeRef(plan.revision, plan.commit);
    } finally {
      reservation.release();
    }
    return provisionResult(plan, run.stats);
  }

  /** plan + provision of a model_ref as typed (parsed and checked here). */
  async download(modelRef: string, opts: ProvisionOptions & { revision?: string } = {}): Promise<ProvisionResult> {
    const ref = parseModelRef(modelRef);
    if (ref.provider !== "hf") throw invalidInput(`download() takes hf: refs; "${modelRef}" is registered with registerLocal()`);
    const plan = await this.plan(ref, { revision: optionalRevision(opts.revision), signal: opts.signal });
    return this.provision(plan, opts);
  }

  /** Remove the partial downloads of a plan's files (cancel with purge). Complete blobs stay. */
  purgePartials(plan: ModelPlan): void {
    for (const f of plan.files) {
      if (this.blobs.fetching(f.blobPath)) continue;
      plan.cache.removePartial(f.remote.etag);
    }
  }

  /**
   * Describe a `file:` model for the catalog (see local-model.ts): the path and every file under it
   * must resolve (symlinks included) under modelsDir or an allowed root; a directory is walked
   * asynchronously within the walk limits. Errors: 400 INVALID_INPUT, 404 MODEL_NOT_FOUND,
   * 413 MODEL_DIR_TOO_LARGE.
   */
  registerLocal(ref: FileModelRef): Promise<RegisterInput> {
    return describeLocalModel(ref, this.local);
  }
}

/** What the catalog registers, plus the revision and the transfer's stats. */
function provisionResult(plan: ModelPlan, stats: ProvisionStats): ProvisionResult {
  return {
    modelRef: plan.modelRef,
    revision: plan.revision,
    commit: plan.commit,
    local_path: plan.localPath,
    format: plan.selection.format,
    quantization: plan.selection.quantization,
    files: plan.cache.catalogFiles(plan.commit, plan.files.map((f) => f.remote)),
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
