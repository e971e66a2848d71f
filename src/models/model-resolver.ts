/**
 * The models area's side of the spawn port (src/shared/model-source.ts): `validate` parses the
 * model_ref once and checks a `file:` path against the allowed roots (cheap, before the binary
 * lookup and any hub traffic); `locate` (what the model is, before any download) and `resolve`
 * hand the parsed ref to the model service (catalog + download tracker).
 */
import { validatePathUnderRoots } from "../shared/input-validation.ts";
import type { LocatedModel, ModelResolver, ResolvedModel } from "../shared/model-source.ts";
import { parseModelRef, type ParsedModelRef } from "./model-catalog/model-ref.ts";

/** What resolve() delegates to (the ModelService). */
export interface ModelSource {
  locate(ref: ParsedModelRef, opts?: { revision?: string }): Promise<LocatedModel>;
  resolve(ref: ParsedModelRef, opts?: { revision?: string }): Promise<ResolvedModel>;
}

export interface ModelResolverOptions {
  modelsDir: string;
  allowedRoots: string[];
  source: ModelSource;
}

export function createModelResolver(opts: ModelResolverOptions): ModelResolver<ParsedModelRef> {
  const roots = [opts.modelsDir, ...opts.allowedRoots];
  return {
    validate(modelRef) {
      const parsed = parseModelRef(modelRef);
      if (parsed.provider === "file") validatePathUnderRoots(parsed.path, roots, "model_ref");
      return parsed;
    },
    locate: (ref, locateOpts) => opts.source.locate(ref, locateOpts),
    resolve: (ref, resolveOpts) => opts.source.resolve(ref, resolveOpts),
  };
}
