/**
 * Models on this host: the catalog, downloads through the tracker, deletion, and the `hf:`/`file:`
 * source that spawn uses (a model not in the catalog starts or joins its download).
 * The routes' model_ref and revision are parsed here, once; spawn's arrive parsed (model-resolver.ts).
 */
import type { CatalogEntry, ModelCatalog } from "./model-catalog/catalog.ts";
import { optionalRevision, parseModelRef, type ParsedModelRef } from "./model-catalog/model-ref.ts";
import type { DownloadTracker } from "./download-tracker.ts";
import type { ModelSource } from "./model-resolver.ts";
import type { DownloadAnswer, DownloadRequest, ModelQuery, RemovedModel } from "./schemas.ts";
import { removeModelFiles } from "./provisioner/remove.ts";
import type { LocatedModel, ResolvedModel } from "../shared/model-source.ts";
import { conflict, errorMessage, notFound } from "../shared/errors.ts";
import type { Logger } from "../shared/logger.ts";

/** The workers on this host as far as models care (the worker registry): a model in use is not deleted. */
export interface ModelUsers {
  list(): ReadonlyArray<{ readonly id: string; readonly model_ref: string }>;
}

export class ModelService implements ModelSource {
  constructor(
    private readonly d: {
      catalog: ModelCatalog;
      tracker: DownloadTracker;
      registry: ModelUsers;
      modelsDir: string;
      logger: Logger;
      /** Told after a model was removed (the audit log). */
      onRemoved?: (removed: RemovedModel) => void;
    },
  ) {}

  /** Upstream answer: `{"download_id","local_path":null}`, or `"cached"` with the path. */
  async download(req: DownloadRequest): Promise<DownloadAnswer> {
    const ref = parseModelRef(req.model_ref);
    const r = await this.d.tracker.start(ref, { revision: optionalRevision(req.revision) });
    if (r.cached) return { download_id: "cached", local_path: r.local_path, model_ref: ref.modelRef, joined: false };
    return { download_id: r.job.id, local_path: null, model_ref: ref.modelRef, joined: r.joined };
  }

  /**
   * For spawn, before anything is downloaded: the model on this host (a catalog entry whose files
   * are on disk, or a `file:` model described now; its use is recorded) or, for an `hf:` model not
   * here, its footprint from the hub (plan and GGUF header; no transfer).
   */
  async locate(ref: ParsedModelRef, opts: { revision?: string } = {}): Promise<LocatedModel> {
    const revision = optionalRevision(opts.revision);
    if (ref.provider === "file") {
      const r = await this.d.tracker.start(ref, { revision });
      if (!r.cached) throw new Error("unreachable: file: models are registered on the spot");
      this.touch(ref.modelRef, revision);
      return { local: r.local_path, footprint: r.entry };
    }
    const entry = this.d.catalog.getOnDisk(ref.modelRef, revision);
    if (entry) {
      this.touch(ref.modelRef, revision);
      return { local: entry.local_path, footprint: entry };
    }
    return { local: null, footprint: await this.d.tracker.footprint(ref, { revision }) };
  }

  /** A catalog model (files on disk) by its ref as a caller typed it, or null (GET /v1/capacity). */
  find(modelRef: string, revision?: string): CatalogEntry | null {
    return this.d.catalog.getOnDisk(parseModelRef(modelRef).modelRef, optionalRevision(revision));
  }

  /** For spawn: a local path now, or a download to wait for (never blocks on the transfer). */
  async resolve(ref: ParsedModelRef, opts: { revision?: string } = {}): Promise<ResolvedModel> {
    const revision = optionalRevision(opts.revision);
    const r = await this.d.tracker.start(ref, { revision });
    if (r.cached) {
      this.touch(ref.modelRef, revision);
      return { kind: "local", path: r.local_path };
    }
    const done = this.d.tracker.whenDone(r.job.id).then((entry) => {
      this.touch(ref.modelRef, revision);
      return entry.local_path;
    });
    return { kind: "downloading", downloadId: r.job.id, done };
  }

  /** last_used_at is bookkeeping: a catalog that cannot take the write must not fail the spawn. */
  private touch(modelRef: string, revision?: string): void {
    try {
      this.d.catalog.touch(modelRef, revision);
    } catch (e) {
      this.d.logger.warn("could not record the model's last use", { model_ref: modelRef, error: errorMessage(e) });
    }
  }

  /**
   * The catalog's models whose files are all on disk with their recorded sizes (a stat per file,
   * no hashing). An entry that lost files is hidden, not deleted: the next download or spawn of it
   * replaces the row, and a file that comes back (a remounted disk) makes it visible again.
   */
  list(): CatalogEntry[] {
    return this.d.catalog.list().filter((entry) => this.d.catalog.checkOnDisk(entry).ok);
  }

  /**
   * Unregister a model and delete its downloaded files (files of `file:` models are the
   * operator's and stay). 409 while a worker uses it.
   */
  remove(query: ModelQuery): RemovedModel {
    const { revision } = query;
    const modelRef = parseModelRef(query.model_ref).modelRef;
    const entry = this.d.catalog.get(modelRef, revision);
    if (!entry) throw notFound("MODEL_NOT_FOUND", `model ${modelRef}${revision ? `@${revision}` : ""} is not in the catalog`);
    const users = this.d.registry.list().filter((w) => w.model_ref === modelRef);
    if (users.length > 0) {
      throw conflict("MODEL_IN_USE", `model ${modelRef} is used by ${users.length} worker(s); stop them first`, {
        worker_ids: users.map((w) => w.id),
      });
    }
    // Unregister first: a crash between the two steps leaves stray files, never a row without files.
    this.d.catalog.remove(modelRef, revision);
    const freed = entry.provider === "hf" ? removeModelFiles(this.d.modelsDir, entry) : 0;
    this.d.logger.info("model removed", { model_ref: modelRef, freed_bytes: freed });
    const removed: RemovedModel = { model_ref: modelRef, removed: true, freed_bytes: freed };
    this.d.onRemoved?.(removed);
    return removed;
  }
}
