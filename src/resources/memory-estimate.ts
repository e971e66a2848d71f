/**
 * How much device memory a worker will need: pure arithmetic, no I/O.
 *
 *   needed = weights + KV cache + overhead
 *   weights  = the model's tensor data (GGUF: bytes after the headers, every shard;
 *              safetensors: the weight files' sizes)
 *   KV cache = layers × context × KV heads × (key length + value length) × 2 bytes (f16 cache)
 *              key/value length default to embedding / heads
 *   context  = the spawn's (or profile's) context, else the model's own context capped at
 *              resources.context_cap, else context_cap when the model does not say
 *   overhead = resources.overhead_mb (runtime context, compute buffers)
 */
import { Nullable, t, type Static } from "../shared/schema.ts";
import type { GgufModelInfo } from "./gguf.ts";

/** The f16 KV cache llama.cpp and most runtimes use by default. */
export const KV_BYTES_PER_ELEMENT = 2;

export const MemoryEstimate = t.Object({
  total_bytes: t.Integer(),
  weights_bytes: t.Integer(),
  kv_cache_bytes: t.Integer(),
  overhead_bytes: t.Integer(),
  context_length: t.Integer({ description: "the context the KV cache is sized for" }),
  context_source: t.Union([t.Literal("request"), t.Literal("model"), t.Literal("cap")], {
    description: "request: asked for; model: the model's own; cap: the model's was larger than context_cap or unknown",
  }),
  model_context_length: Nullable(t.Integer()),
  kv_bytes_per_token: t.Integer(),
  /** Set when part of the formula had to be left out (e.g. no layer/head counts: KV cache 0). */
  note: Nullable(t.String()),
});
export type MemoryEstimate = Static<typeof MemoryEstimate>;

export interface EstimateOptions {
  /** The context the worker will run with (spawn request or profile); absent = the default rule. */
  context?: number;
  contextCap: number;
  overheadBytes: number;
}

/** What the formula needs, whatever the model's format. */
export interface ModelShape {
  weightsBytes: number;
  contextLength: number | null;
  layers: number | null;
  embedding: number | null;
  heads: number | null;
  kvHeads: number | null;
  keyLength: number | null;
  valueLength: number | null;
  kvBytesPerElement: number;
}

export function chooseContext(requested: number | undefined, modelContext: number | null, cap: number): { context: number; source: MemoryEstimate["context_source"] } {
  if (requested !== undefined) return { context: requested, source: "request" };
  if (modelContext !== null && modelContext > 0 && modelContext <= cap) return { context: modelContext, source: "model" };
  return { context: cap, source: "cap" };
}

/** KV cache bytes for one token across all layers, or null when the shape is not known. */
export function kvBytesPerToken(s: ModelShape): number | null {
  if (!s.layers || !s.heads) return null;
  const headDim = s.embedding ? s.embedding / s.heads : null;
  const k = s.keyLength ?? headDim;
  const v = s.valueLength ?? headDim;
  if (!k || !v) return null;
  const kvHeads = s.kvHeads ?? s.heads;
  return Math.ceil(s.layers * kvHeads * (k + v) * s.kvBytesPerElement);
}

export function estimateMemory(s: ModelShape, o: EstimateOptions): MemoryEstimate {
  const { context, source } = chooseContext(o.context, s.contextLength, o.contextCap);
  const perToken = kvBytesPerToken(s);
  const kv = perToken === null ? 0 : perToken * context;
  return {
    total_bytes: s.weightsBytes + kv + o.overheadBytes,
    weights_bytes: s.weightsBytes,
    kv_cache_bytes: kv,
    overhead_bytes: o.overheadBytes,
    context_length: context,
    context_source: source,
    model_context_length: s.contextLength,
    kv_bytes_per_token: perToken ?? 0,
    note: perToken === null ? "the model does not give its layer and head counts: KV cache not counted" : null,
  };
}

export function ggufShape(info: GgufModelInfo): ModelShape {
  return {
    weightsBytes: info.tensor_data_bytes,
    contextLength: info.context_length,
    layers: info.block_count,
    embedding: info.embedding_length,
    heads: info.head_count,
    kvHeads: info.head_count_kv,
    keyLength: info.key_length,
    valueLength: info.value_length,
    kvBytesPerElement: KV_BYTES_PER_ELEMENT,
  };
}

/** Hugging Face `config.json` of a transformers model (multimodal ones nest it in text_config). */
export function safetensorsShape(config: Record<string, unknown>, weightsBytes: number): ModelShape {
  const c = (config.text_config && typeof config.text_config === "object" ? config.text_config : config) as Record<string, unknown>;
  const n = (k: string) => (typeof c[k] === "number" && Number.isFinite(c[k]) ? (c[k] as number) : null);
  const heads = n("num_attention_heads") ?? n("n_head");
  const headDim = n("head_dim");
  const dtype = String(c.torch_dtype ?? config.torch_dtype ?? "float16");
  return {
    weightsBytes,
    contextLength: n("max_position_embeddings") ?? n("n_positions") ?? n("seq_length"),
    layers: n("num_hidden_layers") ?? n("n_layer"),
    embedding: n("hidden_size") ?? n("n_embd"),
    heads,
    kvHeads: n("num_key_value_heads") ?? heads,
    keyLength: headDim,
    valueLength: headDim,
    // Runtimes keep the cache in the model's dtype: 4 bytes for float32 models, else 2.
    kvBytesPerElement: dtype === "float32" ? 4 : 2,
  };
}

/** A model whose layout is unknown: its files' size, no KV cache. */
export function sizeOnlyShape(weightsBytes: number): ModelShape {
  return { weightsBytes, contextLength: null, layers: null, embedding: null, heads: null, kvHeads: null, keyLength: null, valueLength: null, kvBytesPerElement: KV_BYTES_PER_ELEMENT };
}
