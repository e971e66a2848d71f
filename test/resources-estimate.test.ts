/** Memory estimates against numbers computed by hand from the models' real hyperparameters. */
import { afterEach, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { estimateMemory, ggufShape, safetensorsShape, sizeOnlyShape, type ModelShape } from "../src/resources/memory-estimate.ts";
import { ModelFootprints } from "../src/resources/model-footprint.ts";
import { readGgufModel } from "../src/resources/gguf.ts";
import { tinyLlamaSpec, writeGguf } from "./fixtures/gguf-writer.ts";
import { tempDir } from "./helpers.ts";

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const defaults = { contextCap: 4096, overheadBytes: 1024 * MiB };

let dir: { path: string; cleanup: () => void } | undefined;
afterEach(() => dir?.cleanup());

const shape = (s: Partial<ModelShape>): ModelShape => ({ ...sizeOnlyShape(0), ...s });

describe("memory estimate", () => {
  test("the README's worked example: Llama-2-7B Q4_K_M at 4k context", () => {
    // 32 layers, 4096 embedding, 32 heads, 32 KV heads (no GQA), trained context 4096, f16 KV cache.
    const llama2 = shape({ weightsBytes: 4_080_000_000, contextLength: 4096, layers: 32, embedding: 4096, heads: 32, kvHeads: 32 });
    const e = estimateMemory(llama2, defaults);
    // per token: 32 layers × 32 KV heads × (128 + 128) × 2 bytes = 524 288 (512 KiB)
    expect(e.kv_bytes_per_token).toBe(524_288);
    // × 4096 tokens = 2 GiB
    expect(e.kv_cache_bytes).toBe(2 * GiB);
    expect(e).toEqual({
      total_bytes: 4_080_000_000 + 2_147_483_648 + 1_073_741_824, // 7 301 225 472 B = 6.80 GiB
      weights_bytes: 4_080_000_000,
      kv_cache_bytes: 2_147_483_648,
      overhead_bytes: 1_073_741_824,
      context_length: 4096,
      context_source: "model",
      model_context_length: 4096,
      kv_bytes_per_token: 524_288,
      note: null,
    });
    expect((e.total_bytes / GiB).toFixed(2)).toBe("6.80");
  });

  test("grouped-query attention (Llama-3-8B): 8 KV heads, a 8k model context capped at 4k", () => {
    const e = estimateMemory(shape({ weightsBytes: 16_060_522_496, contextLength: 8192, layers: 32, embedding: 4096, heads: 32, kvHeads: 8 }), defaults);
    // 32 × 8 × (128 + 128) × 2 = 131 072 B per token; × 4096 = 512 MiB
    expect([e.kv_bytes_per_token, e.kv_cache_bytes, e.context_length, e.context_source]).toEqual([131_072, 512 * MiB, 4096, "cap"]);
    expect(e.total_bytes).toBe(16_060_522_496 + 512 * MiB + 1024 * MiB);
  });

  test("an explicit head size (Gemma-7B: 16 heads of 256 on a 3072 embedding)", () => {
    const e = estimateMemory(shape({ weightsBytes: 0, contextLength: 8192, layers: 28, embedding: 3072, heads: 16, kvHeads: 16, keyLength: 256, valueLength: 256 }), { ...defaults, overheadBytes: 0 });
    // 28 × 16 × (256 + 256) × 2 = 458 752 B per token (embedding/heads would say 192)
    expect(e.kv_bytes_per_token).toBe(458_752);
    expect(e.kv_cache_bytes).toBe(458_752 * 4096);
  });

  test("context: the request's wins; the model's when under the cap; else the cap", () => {
    const s = shape({ weightsBytes: 1, contextLength: 131_072, layers: 1, embedding: 64, heads: 1 });
    expect(estimateMemory(s, { ...defaults, context: 8192 })).toMatchObject({ context_length: 8192, context_source: "request", kv_cache_bytes: 8192 * 256 });
    expect(estimateMemory(s, defaults)).toMatchObject({ context_length: 4096, context_source: "cap", model_context_length: 131_072 });
    expect(estimateMemory({ ...s, contextLength: 2048 }, defaults)).toMatchObject({ context_length: 2048, context_source: "model" });
    expect(estimateMemory({ ...s, contextLength: null }, defaults)).toMatchObject({ context_length: 4096, context_source: "cap", model_context_length: null });
  });

  test("without layer and head counts the KV cache is left out, and the answer says so", () => {
    expect(estimateMemory(sizeOnlyShape(5 * GiB), defaults)).toEqual({
      total_bytes: 6 * GiB, weights_bytes: 5 * GiB, kv_cache_bytes: 0, overhead_bytes: 1024 * MiB, context_length: 4096, context_source: "cap",
      model_context_length: null, kv_bytes_per_token: 0, note: "the model does not give its layer and head counts: KV cache not counted",
    });
  });

  test("a GGUF file read from disk: tensor data + KV + overhead", async () => {
    dir = tempDir("rbee-est-");
    const path = join(dir.path, "tiny.gguf");
    writeGguf(path, tinyLlamaSpec());
    const e = estimateMemory(ggufShape(await readGgufModel(path)), { contextCap: 4096, overheadBytes: MiB });
    // 4 layers × 2 KV heads × (32 + 32) × 2 bytes = 1024 B per token × 2048 (the model's context)
    expect(e).toMatchObject({ weights_bytes: 3072, kv_bytes_per_token: 1024, kv_cache_bytes: 2048 * 1024, context_source: "model" });
    expect(e.total_bytes).toBe(3072 + 2_097_152 + 1_048_576);
  });

  test("safetensors: config.json (nested text_config, float32 cache) and the weight files' sizes", async () => {
    dir = tempDir("rbee-est-");
    const config = join(dir.path, "config.json");
    writeFileSync(config, JSON.stringify({ architectures: ["LlamaForCausalLM"], num_hidden_layers: 32, hidden_size: 4096, num_attention_heads: 32, num_key_value_heads: 8, max_position_embeddings: 8192, torch_dtype: "bfloat16" }));
    const files = [
      { path: "config.json", local_path: config, size_bytes: 654 },
      { path: "model-00001-of-00002.safetensors", local_path: "/x/1", size_bytes: 9_976_576_152 },
      { path: "model-00002-of-00002.safetensors", local_path: "/x/2", size_bytes: 6_083_946_344 },
      { path: "tokenizer.json", local_path: "/x/t", size_bytes: 9_085_698 },
    ];
    const s = await new ModelFootprints().shape({ local_path: dir.path, format: "safetensors", metadata: {}, files });
    expect(s).toEqual({ weightsBytes: 16_060_522_496, contextLength: 8192, layers: 32, embedding: 4096, heads: 32, kvHeads: 8, keyLength: null, valueLength: null, kvBytesPerElement: 2 });
    expect(estimateMemory(s, defaults).kv_cache_bytes).toBe(512 * MiB);
    const nested = safetensorsShape({ text_config: { num_hidden_layers: 2, hidden_size: 128, num_attention_heads: 4, head_dim: 64 }, torch_dtype: "float32" }, 10);
    expect(nested).toMatchObject({ layers: 2, heads: 4, kvHeads: 4, keyLength: 64, kvBytesPerElement: 4 });
    // 2 × 4 × (64 + 64) × 4 bytes
    expect(estimateMemory(nested, defaults).kv_bytes_per_token).toBe(4096);
  });
});
