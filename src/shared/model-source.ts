/**
 * The port through which a spawn gets its model. Workers depend on this file only; the models area
 * implements it (src/models/model-resolver.ts), so neither side imports the other.
 */

export type ResolvedModel =
  | { kind: "local"; path: string }
  | { kind: "downloading"; downloadId: string; done: Promise<string> };

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
  /** A local model path now, or a download to wait for (never blocks on the transfer). */
  resolve(ref: Ref, opts?: { revision?: string }): Promise<ResolvedModel>;
}
