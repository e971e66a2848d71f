/**
 * The shape of a model on disk (what the memory estimate needs), from a catalog entry: the GGUF
 * metadata kept in the catalog (`metadata.gguf`) when it is there, else the GGUF header(s) read
 * now; `config.json` and the weight files' sizes for safetensors; the files' size otherwise.
 * Results are kept per file path and size: a header is read once per model version.
 */
import { readFile } from "node:fs/promises";
import { Value } from "@sinclair/typebox/value";
import type { ModelFootprint } from "../shared/model-source.ts";
import { GgufModelInfo, readGgufModel } from "./gguf.ts";
import { ggufShape, safetensorsShape, sizeOnlyShape, type ModelShape } from "./memory-estimate.ts";

/** The parts of a catalog entry this needs (CatalogEntry satisfies it): the spawn port's footprint. */
export type FootprintSource = ModelFootprint;

const lower = (p: string) => p.toLowerCase();

/** The file a GGUF model is read from: the entry's path when it is one, else its first GGUF (shard 1). */
export function primaryGguf(src: FootprintSource): string | null {
  if (lower(src.local_path).endsWith(".gguf")) return src.local_path;
  const ggufs = src.files.filter((f) => lower(f.path).endsWith(".gguf")).sort((a, b) => a.path.localeCompare(b.path));
  return ggufs[0]?.local_path ?? null;
}

export class ModelFootprints {
  private readonly cache = new Map<string, ModelShape>();

  async shape(src: FootprintSource): Promise<ModelShape> {
    const key = `${src.local_path}\0${src.files.map((f) => `${f.path}:${f.size_bytes}`).join("\0")}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    const shape = await this.read(src);
    this.cache.set(key, shape);
    return shape;
  }

  private async read(src: FootprintSource): Promise<ModelShape> {
    const gguf = primaryGguf(src);
    if (src.format === "gguf" || (src.format !== "safetensors" && gguf)) {
      const kept = src.metadata.gguf;
      if (kept && Value.Check(GgufModelInfo, kept)) return ggufShape(kept);
      if (gguf) return ggufShape(await readGgufModel(gguf));
    }
    const weights = src.files.filter((f) => lower(f.path).endsWith(".safetensors"));
    const weightBytes = weights.reduce((s, f) => s + f.size_bytes, 0);
    // A model not downloaded yet brings its config.json as read from the hub.
    const kept = src.metadata.config;
    if (weights.length && kept && typeof kept === "object" && !Array.isArray(kept)) return safetensorsShape(kept as Record<string, unknown>, weightBytes);
    const config = src.files.find((f) => lower(f.path) === "config.json" || lower(f.path).endsWith("/config.json"));
    if (weights.length && config) {
      try {
        const parsed = JSON.parse(await readFile(config.local_path, "utf8"));
        if (parsed && typeof parsed === "object") return safetensorsShape(parsed, weightBytes);
      } catch {
        // an unreadable config.json leaves the size-only estimate
      }
    }
    const bytes = (weights.length ? weights : src.files).reduce((s, f) => s + f.size_bytes, 0);
    return sizeOnlyShape(bytes);
  }
}

/**
 * What registering a model adds to its catalog metadata: `{ gguf: … }` for a GGUF model, read from
 * its header(s) now, so that a file that is not valid GGUF is refused (400 INVALID_GGUF) before it
 * enters the catalog; nothing for other formats.
 */
export async function catalogMetadata(src: Omit<FootprintSource, "metadata">): Promise<{ gguf?: GgufModelInfo }> {
  const gguf = primaryGguf({ ...src, metadata: {} });
  if (src.format === "safetensors" || !gguf) return {};
  return { gguf: await readGgufModel(gguf) };
}
