/**
 * Model references (`model_ref`) understood by the hive.
 *
 * - `hf:<org>/<repo>`                   the repo's default file set (see provisioner/select.ts)
 * - `hf:<org>/<repo>:<QUANT>`           one GGUF quantization, e.g. `hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF:Q4_K_M`
 * - `hf:<org>/<repo>/<path/in/repo>`    one exact file (a split GGUF shard brings its whole set)
 * - `file:<absolute path>`              a model already on disk (file or directory); `file:///abs`,
 *                                       duplicate and trailing slashes are accepted and canonicalized
 *
 * A revision (branch, tag or commit) is passed beside the ref, never inside it (the upstream
 * character set has no room for it). All functions throw HiveError(400, INVALID_INPUT), except for
 * an unknown provider: 400 UNSUPPORTED_PROVIDER.
 *
 * A model_ref is parsed once where it enters (the HTTP controller or the first service call);
 * everything below takes the `ParsedModelRef`.
 */
import { HiveError, invalidInput } from "../../shared/errors.ts";
import { splitModelRef, validateModelRef } from "../../shared/input-validation.ts";

export type HfSelector =
  | { kind: "default" }
  | { kind: "quant"; quant: string }
  | { kind: "file"; path: string };

export type ParsedModelRef =
  | { provider: "hf"; modelRef: string; reference: string; repo: string; org: string; name: string; selector: HfSelector }
  | { provider: "file"; modelRef: string; reference: string; path: string };
export type HfModelRef = Extract<ParsedModelRef, { provider: "hf" }>;
export type FileModelRef = Extract<ParsedModelRef, { provider: "file" }>;

/** The revision used when none is given (what `huggingface_hub` uses too). */
export const DEFAULT_REVISION = "main";

const REPO_PART = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const QUANT = /^[A-Za-z0-9][A-Za-z0-9_]*$/;
const REVISION = /^[A-Za-z0-9._/-]+$/;

function validateRepoPart(part: string, what: string, modelRef: string): void {
  if (part.length === 0 || part.length > 96 || !REPO_PART.test(part) || part.includes("--") || part.includes("..")) {
    throw invalidInput(
      `model_ref "${modelRef}": ${what} "${part}" is not a valid Hugging Face name (letters, digits, '-', '_', '.'; ≤ 96 chars; no "--" or "..")`,
      { field: "model_ref" },
    );
  }
}

/**
 * The one spelling of a `file:` path: runs of '/' collapsed (so `file:///abs` is `file:/abs`), no
 * trailing '/'. One path must be one catalog key and one worker model_ref, however it was typed.
 */
export function canonicalFilePath(reference: string): string {
  const p = reference.replace(/\/{2,}/g, "/");
  return p.length > 1 && p.endsWith("/") ? p.slice(0, -1) : p;
}

/**
 * Parse and validate a model_ref; `modelRef` of the result is its canonical spelling (`file:` paths
 * canonicalized, `hf:` refs as given). Throws 400 INVALID_INPUT with a message that says what to
 * fix, or 400 UNSUPPORTED_PROVIDER.
 */
export function parseModelRef(value: unknown): ParsedModelRef {
  const given = validateModelRef(value);
  const { provider, reference: raw } = splitModelRef(given);
  if (provider === "file") {
    if (!raw.startsWith("/")) {
      throw invalidInput(`model_ref "${given}": file: needs an absolute path, e.g. "file:/var/lib/rbee/models/x.gguf"`, {
        field: "model_ref",
      });
    }
    const path = canonicalFilePath(raw);
    if (path.split("/").some((s) => s === "." || s === "..")) {
      throw invalidInput(`model_ref "${given}": '.' and '..' path segments are not allowed`, { field: "model_ref" });
    }
    return { provider: "file", modelRef: `file:${path}`, reference: path, path };
  }
  const modelRef = given;
  const reference = raw;
  if (provider !== "hf") {
    throw new HiveError(400, "UNSUPPORTED_PROVIDER", `model_ref "${modelRef}": unknown provider "${provider}" (supported: "hf", "file")`, {
      field: "model_ref",
    });
  }
  const segments = reference.split("/");
  if (segments.length < 2 || segments.some((s) => s.length === 0)) {
    throw invalidInput(
      `model_ref "${modelRef}": expected "hf:<org>/<repo>", "hf:<org>/<repo>:<QUANT>" or "hf:<org>/<repo>/<file>"`,
      { field: "model_ref" },
    );
  }
  const org = segments[0]!;
  let name = segments[1]!;
  let selector: HfSelector = { kind: "default" };
  if (segments.length === 2 && name.includes(":")) {
    const parts = name.split(":");
    if (parts.length !== 2 || !QUANT.test(parts[1]!) || parts[1]!.length > 32) {
      throw invalidInput(`model_ref "${modelRef}": the quantization after ':' must look like Q4_K_M`, { field: "model_ref" });
    }
    name = parts[0]!;
    selector = { kind: "quant", quant: parts[1]! };
  } else if (segments.length > 2) {
    if (reference.includes(":")) {
      throw invalidInput(`model_ref "${modelRef}": use either ":<QUANT>" or "/<file>", not both`, { field: "model_ref" });
    }
    selector = { kind: "file", path: segments.slice(2).join("/") };
  } else if (reference.includes(":")) {
    throw invalidInput(`model_ref "${modelRef}": unexpected ':'`, { field: "model_ref" });
  }
  validateRepoPart(org, "organization", modelRef);
  validateRepoPart(name, "repository", modelRef);
  return { provider: "hf", modelRef, reference, repo: `${org}/${name}`, org, name, selector };
}

/** A branch, tag or commit: `[A-Za-z0-9._/-]`, ≤ 255 chars, no `..`, no empty segments. */
export function validateRevision(value: unknown, field = "revision"): string {
  if (typeof value !== "string" || value.length === 0) throw invalidInput(`${field} must be a non-empty string`, { field });
  if (value.length > 255) throw invalidInput(`${field} is longer than 255 characters`, { field });
  if (!REVISION.test(value)) {
    throw invalidInput(`${field} "${value}" may only contain letters, digits, '.', '_', '-' and '/'`, { field });
  }
  if (value.split("/").some((s) => s === "" || s === "." || s === "..")) {
    throw invalidInput(`${field} "${value}" has an empty, '.' or '..' segment`, { field });
  }
  return value;
}

/** A revision as a caller gave it: undefined (the default branch) or a valid one. */
export function optionalRevision(value: string | undefined): string | undefined {
  return value === undefined ? undefined : validateRevision(value);
}

export function isCommitSha(rev: string): boolean {
  return /^[0-9a-f]{40}$/.test(rev);
}

/**
 * The catalog's primary key for a ref at a revision. The upstream table keys on
 * (reference, provider) only; a non-default revision is appended as `@<revision>` ('@' can never
 * appear in a model_ref, so the keys cannot collide with a plain ref).
 */
export function catalogKey(modelRef: string, revision?: string): { provider: string; reference: string } {
  const { provider, reference } = splitModelRef(modelRef);
  if (provider === "file") return { provider, reference: canonicalFilePath(reference) };
  if (provider !== "hf" || revision === undefined || revision === DEFAULT_REVISION) return { provider, reference };
  return { provider, reference: `${reference}@${revision}` };
}
