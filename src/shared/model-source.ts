/**
 * The port through which a spawn gets its model. Workers depend on this file only; the models area
 * implements it (src/models/model-resolver.ts), so neither side imports the other.
 */

export type ResolvedModel =
  | { kind: "local"; path: string }
  | { kind: "downloading"; downloadId: string; done: Promise<string> };

/**
 * What a model's memory estimate is made from, known before any download: its files (where they
 * are or will be, with their sizes), its format and what the model side has read of it (the GGUF
 * header under `metadata.gguf`, a transformers `config.json` under `metadata.config`). A catalog
 * entry is one.
 */
export interface ModelFootprint {
  local_path: string;
  format: string | null;
  metadata: Record<string, unknown>;
  files: { path: string; local_path: string; size_bytes: number }[];
}

/**
 * Where a spawn's model is: on this host now (`local`: a path; the catalog records its use), or
 * not yet (`local: null`: `resolve` starts or joins its download). Either way with its footprint.
 */
export interface LocatedModel {
  local: string | null;
  footprint: ModelFootprint;
}

/** A model_ref the model side has parsed; a worker reads only its canonical spelling. */
export interface CheckedModelRef {
  readonly modelRef: string;
}

/** `Ref` is whatever `validate` returns: the parsed value travels back into `resolve` unparsed. */
export interface ModelResolver<Ref extends CheckedModelRef = CheckedModelRef> {
  /**
   * Parse and check the reference alone (provider, syntax, path roots), before anything else
   * happens. `modelRef` of the result is the canonical spelling the worker record keeps.
   */
  validate(modelRef: string): Ref;
  /**
   * The model's footprint without downloading anything (the memory check runs before any
   * download): the catalog entry, a `file:` model described now, or for an `hf:` model not on this
   * host its plan and its GGUF header(s) read from the hub by range requests.
   */
  locate(ref: Ref, opts?: { revision?: string }): Promise<LocatedModel>;
  /** A local model path now, or a download to wait for (never blocks on the transfer). */
  resolve(ref: Ref, opts?: { revision?: string }): Promise<ResolvedModel>;
}
