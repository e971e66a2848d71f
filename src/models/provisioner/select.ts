/**
 * Which files of a repo make up the model a ref asks for. Never substitutes: a choice that is
 * not unique is an error listing the candidates.
 *
 * - GGUF repos, `hf:org/repo`: the first quantization of `quantPreference` (`downloads.quant_preference`) that matches exactly one
 *   GGUF model (a split set `*-00001-of-0000N.gguf` counts as one model and is always taken whole);
 *   a repo with a single GGUF model gives that one; `mmproj*` projector files are never a default.
 * - `hf:org/repo:QUANT`: the GGUF model whose path carries that quantization.
 * - `hf:org/repo/path`: that file (a shard brings its whole set).
 * - safetensors repos: the top-level weights (one set) plus config/tokenizer files.
 */
import { HiveError } from "../../shared/errors.ts";
import type { HfSelector } from "../model-catalog/model-ref.ts";
import type { RemoteFile } from "./hub-client.ts";

/** Small files that travel with safetensors weights (top level only). */
export const SAFETENSORS_COMPANIONS = new Set([
  "config.json",
  "generation_config.json",
  "tokenizer.json",
  "tokenizer_config.json",
  "tokenizer.model",
  "special_tokens_map.json",
  "added_tokens.json",
  "vocab.json",
  "vocab.txt",
  "merges.txt",
  "chat_template.json",
  "chat_template.jinja",
  "preprocessor_config.json",
]);

export type ModelFormat = "gguf" | "safetensors" | "other";

export interface Selection {
  files: RemoteFile[];
  format: ModelFormat;
  quantization: string | null;
  /** Repo path of the file a worker should open; null = the snapshot directory. */
  primary: string | null;
  selectedBy: "default" | "quant" | "file";
}

interface Group {
  /** First file (shard 1) path, what a worker opens. */
  key: string;
  files: RemoteFile[];
  total: number;
}

const GGUF_SHARD = /^(.*)-(\d{5})-of-(\d{5})\.gguf$/i;
const ST_SHARD = /^(.*)-(\d{5})-of-(\d{5})\.safetensors$/i;
const QUANT_IN_NAME =
  /(?<![A-Za-z0-9])(I?Q[1-8]_(?:K_(?:XXS|XS|S|M|L|XL)|K|[01]|XXS|XS|S|M|NL|L)|TQ[12]_0|BF16|F16|FP16|F32|MXFP4)(?![A-Za-z0-9_])/i;

export function quantMatcher(quant: string): RegExp {
  if (!/^[A-Za-z0-9_]+$/.test(quant)) throw new HiveError(400, "INVALID_INPUT", `invalid quantization "${quant}"`);
  return new RegExp(`(?<![A-Za-z0-9])${quant}(?![A-Za-z0-9_])`, "i");
}

/** The quantization a file name carries (upper-case), or null. */
export function detectQuant(path: string): string | null {
  const m = QUANT_IN_NAME.exec(path);
  return m ? m[1]!.toUpperCase() : null;
}

function groupShards(files: RemoteFile[], shardRe: RegExp): Group[] {
  const groups = new Map<string, { files: RemoteFile[]; total: number; shard: boolean }>();
  for (const f of files) {
    const m = shardRe.exec(f.path);
    const k = m ? `${m[1]}\0${m[3]}` : `\0${f.path}`;
    const g = groups.get(k) ?? { files: [], total: m ? Number(m[3]) : 1, shard: !!m };
    g.files.push(f);
    groups.set(k, g);
  }
  const out: Group[] = [];
  for (const g of groups.values()) {
    g.files.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    out.push({ key: g.files[0]!.path, files: g.files, total: g.total });
  }
  return out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
}

function checkComplete(g: Group, repo: string): void {
  if (g.files.length === g.total) return;
  throw new HiveError(
    502,
    "INCOMPLETE_SHARD_SET",
    `${repo}: split model ${g.key} should have ${g.total} shards but the repo has ${g.files.length}`,
    { shards: g.files.map((f) => f.path), expected: g.total },
  );
}

function ambiguous(repo: string, why: string, groups: Group[]): HiveError {
  return new HiveError(400, "AMBIGUOUS_MODEL_FILES", `${repo}: ${why}; name one with hf:${repo}:<QUANT> or hf:${repo}/<file>`, {
    candidates: groups.map((g) => g.key),
  });
}

function ggufSelection(g: Group, quant: string | null, selectedBy: Selection["selectedBy"]): Selection {
  return { files: g.files, format: "gguf", quantization: quant ?? detectQuant(g.key), primary: g.key, selectedBy };
}

export function isGguf(p: string): boolean {
  return p.toLowerCase().endsWith(".gguf");
}

function formatOf(p: string): ModelFormat {
  const l = p.toLowerCase();
  return l.endsWith(".gguf") ? "gguf" : l.endsWith(".safetensors") ? "safetensors" : "other";
}

export function selectFiles(repo: string, selector: HfSelector, files: RemoteFile[], quantPreference: string[]): Selection {
  const ggufGroups = groupShards(files.filter((f) => isGguf(f.path)), GGUF_SHARD);
  if (selector.kind === "file") return selectExactFile(repo, selector.path, files, ggufGroups);
  // Projector files (vision) are never a model on their own.
  const modelGroups = ggufGroups.filter((g) => !/mmproj/i.test(g.key));
  if (selector.kind === "quant") return selectQuant(repo, selector.quant, modelGroups);
  if (modelGroups.length > 0) return selectPreferredGguf(repo, modelGroups, quantPreference);
  return selectSafetensors(repo, files);
}

/** `hf:org/repo/path`: that file; a GGUF shard brings its whole set. */
function selectExactFile(repo: string, path: string, files: RemoteFile[], ggufGroups: Group[]): Selection {
  const f = files.find((x) => x.path === path);
  if (!f) {
    throw new HiveError(404, "MODEL_FILE_NOT_FOUND", `${repo} has no file "${path}"`, {
      candidates: ggufGroups.map((g) => g.key),
    });
  }
  if (isGguf(f.path)) {
    const g = ggufGroups.find((x) => x.files.includes(f))!;
    checkComplete(g, repo);
    return ggufSelection(g, null, "file");
  }
  return { files: [f], format: formatOf(f.path), quantization: detectQuant(f.path), primary: f.path, selectedBy: "file" };
}

/** The one GGUF model whose name carries `quant`; null when none does, 400 AMBIGUOUS_MODEL_FILES when several do. */
function modelWithQuant(repo: string, quant: string, modelGroups: Group[], selectedBy: Selection["selectedBy"]): Selection | null {
  const re = quantMatcher(quant);
  const matches = modelGroups.filter((g) => re.test(g.key));
  if (matches.length > 1) throw ambiguous(repo, `${matches.length} GGUF models match ${quant}`, matches);
  if (matches.length === 0) return null;
  checkComplete(matches[0]!, repo);
  return ggufSelection(matches[0]!, quant.toUpperCase(), selectedBy);
}

/** `hf:org/repo:QUANT`: the one GGUF model carrying that quantization. */
function selectQuant(repo: string, quant: string, modelGroups: Group[]): Selection {
  const one = modelWithQuant(repo, quant, modelGroups, "quant");
  if (one) return one;
  const available = [...new Set(modelGroups.map((g) => detectQuant(g.key)).filter((q): q is string => q !== null))];
  throw new HiveError(
    404,
    "MODEL_FILE_NOT_FOUND",
    modelGroups.length === 0
      ? `${repo} has no GGUF files, so it has no quantization ${quant}`
      : `${repo} has no GGUF file for quantization ${quant} (available: ${available.join(", ") || "none detected"})`,
    { available, candidates: modelGroups.map((g) => g.key) },
  );
}

/** A plain `hf:org/repo` of a GGUF repo: the first preferred quantization that matches one model, else the only model. */
function selectPreferredGguf(repo: string, modelGroups: Group[], quantPreference: string[]): Selection {
  for (const q of quantPreference) {
    const one = modelWithQuant(repo, q, modelGroups, "default");
    if (one) return one;
  }
  if (modelGroups.length === 1) {
    checkComplete(modelGroups[0]!, repo);
    return ggufSelection(modelGroups[0]!, null, "default");
  }
  throw ambiguous(repo, `no GGUF model matches the quantization preference (${quantPreference.join(", ")})`, modelGroups);
}

/** A repo without GGUF files: its top-level safetensors weights (one set) plus config/tokenizer files. */
function selectSafetensors(repo: string, files: RemoteFile[]): Selection {
  const topLevel = files.filter((f) => !f.path.includes("/"));
  const stGroups = groupShards(
    topLevel.filter((f) => f.path.toLowerCase().endsWith(".safetensors")),
    ST_SHARD,
  );
  if (stGroups.length === 0) {
    throw new HiveError(
      400,
      "UNSUPPORTED_MODEL_FORMAT",
      `${repo} has neither GGUF files nor top-level safetensors weights; name a file with hf:${repo}/<file>`,
      { files: files.slice(0, 50).map((f) => f.path) },
    );
  }
  let chosen: Group | undefined;
  if (stGroups.length === 1) chosen = stGroups[0];
  else {
    const std = stGroups.filter((g) => /^model(-\d{5}-of-\d{5})?\.safetensors$/i.test(g.key));
    if (std.length === 1) chosen = std[0];
  }
  if (!chosen) throw ambiguous(repo, `${stGroups.length} sets of safetensors weights`, stGroups);
  checkComplete(chosen, repo);
  const prefix = chosen.total > 1 ? ST_SHARD.exec(chosen.key)![1]! : chosen.key.replace(/\.safetensors$/i, "");
  const companions = topLevel.filter(
    (f) => SAFETENSORS_COMPANIONS.has(f.path) || f.path === `${prefix}.safetensors.index.json`,
  );
  return {
    files: [...chosen.files, ...companions],
    format: "safetensors",
    quantization: null,
    primary: null,
    selectedBy: "default",
  };
}
