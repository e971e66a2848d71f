/**
 * Turns a spawn's model_ref into a local model path, or a download to wait for.
 * `file:` refs are resolved here; `hf:` refs go through the catalog and the download tracker.
 */
import { existsSync, statSync } from "node:fs";
import { HiveError, notFound } from "./shared/errors.ts";
import { splitModelRef, validatePathUnderRoots } from "./shared/input-validation.ts";

export type ResolvedModel =
  | { kind: "local"; path: string }
  | { kind: "downloading"; downloadId: string; done: Promise<string> };

export interface ModelResolver {
  /** Cheap checks of the reference alone (provider, path roots), before anything else happens. */
  validate(modelRef: string): void;
  resolve(modelRef: string, opts?: { revision?: string }): Promise<ResolvedModel>;
}

/** The catalog/download side, provided once the models service exists. */
export interface HfModelSource {
  resolve(modelRef: string, opts?: { revision?: string }): Promise<ResolvedModel>;
}

export interface ModelResolverOptions {
  modelsDir: string;
  allowedRoots: string[];
  hf?: HfModelSource;
}

export function resolveFileRef(reference: string, roots: string[]): string {
  const path = validatePathUnderRoots(reference, roots, "model_ref");
  if (!existsSync(path)) throw notFound("MODEL_NOT_FOUND", `model file ${path} does not exist`);
  const st = statSync(path);
  if (!st.isFile() && !st.isDirectory()) throw notFound("MODEL_NOT_FOUND", `model path ${path} is not a file or directory`);
  return path;
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
      const { provider, reference } = splitModelRef(modelRef);
      if (provider === "file") return { kind: "local", path: resolveFileRef(reference, roots) };
      if (provider === "hf") {
        if (!opts.hf) {
          throw notFound("MODEL_NOT_FOUND", `model ${modelRef} is not in the catalog; download it first (POST /v1/models/download)`);
        }
        return opts.hf.resolve(modelRef, resolveOpts);
      }
      throw new HiveError(400, "UNSUPPORTED_PROVIDER", `unknown model provider "${provider}"; use hf: or file:`);
    },
  };
}
