/**
 * Turns a spawn's model_ref into a local model path, or a download to wait for. Cheap checks of
 * the reference run first (before the binary lookup and any hub traffic); the model source
 * (catalog + download tracker) does the rest.
 */
import { HiveError } from "../shared/errors.ts";
import { splitModelRef, validatePathUnderRoots } from "../shared/input-validation.ts";
import { parseModelRef } from "./model-catalog/model-ref.ts";

export type ResolvedModel =
  | { kind: "local"; path: string }
  | { kind: "downloading"; downloadId: string; done: Promise<string> };

export interface ModelResolver {
  /**
   * Cheap checks of the reference alone (provider, path roots), before anything else happens.
   * Returns the canonical ref (one spelling per `file:` path) that the worker record keeps.
   */
  validate(modelRef: string): string;
  resolve(modelRef: string, opts?: { revision?: string }): Promise<ResolvedModel>;
}

/** The catalog/download side: `file:` refs are registered, `hf:` refs found or downloaded. */
export interface ModelSource {
  resolve(modelRef: string, opts?: { revision?: string }): Promise<ResolvedModel>;
}

export interface ModelResolverOptions {
  modelsDir: string;
  allowedRoots: string[];
  source: ModelSource;
}

export function createModelResolver(opts: ModelResolverOptions): ModelResolver {
  const roots = [opts.modelsDir, ...opts.allowedRoots];
  return {
    validate(modelRef) {
      const { provider } = splitModelRef(modelRef);
      if (provider !== "hf" && provider !== "file") {
        throw new HiveError(400, "UNSUPPORTED_PROVIDER", `unknown model provider "${provider}"; use hf: or file:`);
      }
      if (provider === "hf") return modelRef; // the tracker parses it fully
      const parsed = parseModelRef(modelRef);
      if (parsed.provider === "file") validatePathUnderRoots(parsed.path, roots, "model_ref");
      return parsed.modelRef;
    },
    async resolve(modelRef, resolveOpts) {
      this.validate(modelRef);
      return opts.source.resolve(modelRef, resolveOpts);
    },
  };
}
