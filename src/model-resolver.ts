/**
 * Turns a spawn's model_ref into a local model path, or a download to wait for. Cheap checks of
 * the reference run first (before the binary lookup and any hub traffic); the model source
 * (catalog + download tracker) does the rest.
 */
import { HiveError } from "./shared/errors.ts";
import { splitModelRef, validatePathUnderRoots } from "./shared/input-validation.ts";

export type ResolvedModel =
  | { kind: "local"; path: string }
  | { kind: "downloading"; downloadId: string; done: Promise<string> };

export interface ModelResolver {
  /** Cheap checks of the reference alone (provider, path roots), before anything else happens. */
  validate(modelRef: string): void;
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
      const { provider, reference } = splitModelRef(modelRef);
      if (provider === "file") validatePathUnderRoots(reference, roots, "model_ref");
      else if (provider !== "hf") throw new HiveError(400, "UNSUPPORTED_PROVIDER", `unknown model provider "${provider}"; use hf: or file:`);
    },
    async resolve(modelRef, resolveOpts) {
      this.validate(modelRef);
      return opts.source.resolve(modelRef, resolveOpts);
    },
  };
}
