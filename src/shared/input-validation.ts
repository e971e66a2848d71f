/**
 * input-validation: the upstream rules for what callers may send, with messages that say what to fix.
 * Every function throws HiveError(400, INVALID_INPUT) on bad input and returns the value otherwise.
 */
import { resolve, sep, isAbsolute } from "node:path";
import { invalidInput } from "./errors.ts";

export const MODEL_REF_MAX_BYTES = 512;
export const IDENTIFIER_MAX_LENGTH = 128;

const MODEL_REF_ALLOWED = /^[A-Za-z0-9\-_/:.]+$/;
const IDENTIFIER_ALLOWED = /^[A-Za-z0-9_-]+$/;
const SHELL_METACHARACTERS = /[;&|`$(){}<>\\!*?~'"\s\[\]#%^=,]/;

function describeChar(ch: string): string {
  if (ch === "\0") return "a NUL byte";
  if (/\s/.test(ch)) return `whitespace (U+${ch.codePointAt(0)!.toString(16).padStart(4, "0").toUpperCase()})`;
  if (SHELL_METACHARACTERS.test(ch)) return `the shell metacharacter '${ch}'`;
  return `the character '${ch}'`;
}

function firstBadChar(value: string, allowed: RegExp): { ch: string; index: number } | null {
  for (let i = 0; i < value.length; i++) {
    const ch = value[i]!;
    if (!allowed.test(ch)) return { ch, index: i };
  }
  return null;
}

/** model_ref: `<provider>:<reference>`, ≤ 512 bytes, only `[A-Za-z0-9-_/:.]`, no `../`, no NUL. */
export function validateModelRef(value: unknown, field = "model_ref"): string {
  if (typeof value !== "string" || value.length === 0) {
    throw invalidInput(`${field} is required, e.g. "hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF"`, { field });
  }
  const bytes = Buffer.byteLength(value, "utf8");
  if (bytes > MODEL_REF_MAX_BYTES) {
    throw invalidInput(`${field} is ${bytes} bytes long; at most ${MODEL_REF_MAX_BYTES} are allowed`, { field });
  }
  const bad = firstBadChar(value, /[A-Za-z0-9\-_/:.]/);
  if (bad) {
    throw invalidInput(
      `${field} contains ${describeChar(bad.ch)} at position ${bad.index}; allowed are letters, digits, '-', '_', '/', ':' and '.'`,
      { field },
    );
  }
  if (!MODEL_REF_ALLOWED.test(value)) throw invalidInput(`${field} has invalid characters`, { field });
  if (value.includes("../") || value.includes("/..") || value === "..") {
    throw invalidInput(`${field} must not contain '..' path segments (path traversal)`, { field });
  }
  const colon = value.indexOf(":");
  if (colon <= 0 || colon === value.length - 1) {
    throw invalidInput(`${field} must look like "<provider>:<reference>", e.g. "hf:org/repo" or "file:/models/x.gguf"`, {
      field,
    });
  }
  return value;
}

/** Split a validated model_ref at the first ':' (upstream rule). */
export function splitModelRef(modelRef: string): { provider: string; reference: string } {
  const colon = modelRef.indexOf(":");
  return { provider: modelRef.slice(0, colon), reference: modelRef.slice(colon + 1) };
}

/** Identifiers (worker id, backend, profile names): `[A-Za-z0-9_-]`, 1..128 characters. */
export function validateIdentifier(value: unknown, field: string, maxLength = IDENTIFIER_MAX_LENGTH): string {
  if (typeof value !== "string" || value.length === 0) throw invalidInput(`${field} is required`, { field });
  if (value.length > maxLength) {
    throw invalidInput(`${field} is ${value.length} characters long; at most ${maxLength} are allowed`, { field });
  }
  const bad = firstBadChar(value, /[A-Za-z0-9_-]/);
  if (bad || !IDENTIFIER_ALLOWED.test(value)) {
    throw invalidInput(
      `${field} contains ${describeChar(bad?.ch ?? "?")} at position ${bad?.index ?? 0}; allowed are letters, digits, '-' and '_'`,
      { field },
    );
  }
  return value;
}

/**
 * A relative path (e.g. a file name from the hub) that must stay inside `root` once joined.
 * Returns the absolute path. Rejects absolute paths, `..` segments, NUL and backslashes.
 */
export function resolveInside(root: string, relative: string, field = "path"): string {
  if (typeof relative !== "string" || relative.length === 0) throw invalidInput(`${field} is empty`, { field });
  if (relative.includes("\0")) throw invalidInput(`${field} contains a NUL byte`, { field });
  if (relative.includes("\\")) throw invalidInput(`${field} must use '/' separators`, { field });
  if (isAbsolute(relative)) throw invalidInput(`${field} must be relative, got "${relative}"`, { field });
  if (relative.split("/").some((seg) => seg === ".." || seg === ".")) {
    throw invalidInput(`${field} must not contain '.' or '..' segments (path traversal): "${relative}"`, { field });
  }
  const base = resolve(root);
  const full = resolve(base, relative);
  if (!isUnder(base, full)) throw invalidInput(`${field} escapes its directory: "${relative}"`, { field });
  return full;
}

/** True when `candidate` (absolute, normalized) is `root` itself or below it. */
export function isUnder(root: string, candidate: string): boolean {
  const base = resolve(root);
  const full = resolve(candidate);
  return full === base || full.startsWith(base.endsWith(sep) ? base : base + sep);
}

/** An absolute path that must lie under one of `roots` (after normalization). */
export function validatePathUnderRoots(path: string, roots: string[], field = "path"): string {
  if (!isAbsolute(path)) throw invalidInput(`${field} must be an absolute path, got "${path}"`, { field });
  if (path.split("/").some((seg) => seg === "..")) {
    throw invalidInput(`${field} must not contain '..' segments (path traversal)`, { field });
  }
  const full = resolve(path);
  if (!roots.some((r) => isUnder(r, full))) {
    throw invalidInput(`${field} "${full}" is outside the allowed model roots (${roots.join(", ")})`, { field, roots });
  }
  return full;
}
