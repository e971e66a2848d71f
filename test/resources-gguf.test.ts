/**
 * GGUF metadata through @huggingface/gguf, on files the tests write: every value type, versions
 * 1–3, both byte orders, truncated files, files that are not GGUF, split shards; and the same
 * reader inside a compiled binary.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { Value } from "@sinclair/typebox/value";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { GgufModelInfo, ggufShardPaths, readGgufHeader, readGgufModel, readGgufModelRemote } from "../src/resources/gguf.ts";
import { ModelFootprints, catalogMetadata } from "../src/resources/model-footprint.ts";
import { GgufType, ggufBytes, tinyLlamaSpec, writeGguf, type GgufKv } from "./fixtures/gguf-writer.ts";
import { ROOT, rejection, tempDir } from "./helpers.ts";

let dir: { path: string; cleanup: () => void };
afterEach(() => dir?.cleanup());
const scratch = () => (dir = tempDir("rbee-gguf-")).path;

const ALL_TYPES: GgufKv[] = [
  { key: "t.u8", type: GgufType.UINT8, value: 250 },
  { key: "t.i8", type: GgufType.INT8, value: -5 },
  { key: "t.u16", type: GgufType.UINT16, value: 65000 },
  { key: "t.i16", type: GgufType.INT16, value: -32000 },
  { key: "t.u32", type: GgufType.UINT32, value: 4_000_000_000 },
  { key: "t.i32", type: GgufType.INT32, value: -2_000_000_000 },
  { key: "t.f32", type: GgufType.FLOAT32, value: 0.5 },
  { key: "t.bool", type: GgufType.BOOL, value: true },
  { key: "t.str", type: GgufType.STRING, value: "héllo ✓" },
  { key: "t.u64", type: GgufType.UINT64, value: 2n ** 40n },
  { key: "t.i64", type: GgufType.INT64, value: -(2n ** 40n) },
  { key: "t.f64", type: GgufType.FLOAT64, value: 1e-300 },
  { key: "t.arr_i32", type: GgufType.ARRAY, itemType: GgufType.INT32, value: [1, -2, 3] },
  { key: "t.arr_str", type: GgufType.ARRAY, itemType: GgufType.STRING, value: ["a", "", "ccc"] },
];

const TINY_INFO = {
  version: 3, architecture: "llama", name: "tiny-llama-test", context_length: 2048, block_count: 4, embedding_length: 256,
  head_count: 8, head_count_kv: 2, key_length: null, value_length: null, file_type: 15, file_type_name: "Q4_K_M",
  tensor_count: 2, parameter_count: 256 * 4 + 256, shards: 1,
};

describe("GGUF metadata", () => {
  test("a llama-style file: the hyperparameters, the file type, the tensor data size", async () => {
    const path = join(scratch(), "tiny.Q4_K_M.gguf");
    const written = writeGguf(path, tinyLlamaSpec({ extra: ALL_TYPES }));
    const info = await readGgufModel(path);
    // F16 [256,4] = 2048 bytes, padded to 32, then F32 [256] = 1024 bytes.
    expect(written.tensorDataBytes).toBe(2048 + 1024);
    expect(info).toEqual({ ...TINY_INFO, tensor_data_bytes: 2048 + 1024 });
    expect(Value.Check(GgufModelInfo, info)).toBe(true);
  });

  test("every value type reads back as written", async () => {
    const path = join(scratch(), "types.gguf");
    writeGguf(path, { kv: ALL_TYPES });
    const { metadata, tensorCount, tensorDataBytes } = await readGgufHeader(path);
    expect(tensorCount).toBe(0);
    expect(tensorDataBytes).toBe(0);
    expect(Object.fromEntries(ALL_TYPES.map((k) => [k.key, metadata[k.key]]))).toEqual({
      "t.u8": 250, "t.i8": -5, "t.u16": 65000, "t.i16": -32000, "t.u32": 4_000_000_000, "t.i32": -2_000_000_000, "t.f32": 0.5,
      "t.bool": true, "t.str": "héllo ✓", "t.u64": 2n ** 40n, "t.i64": -(2n ** 40n), "t.f64": 1e-300, "t.arr_i32": [1, -2, 3], "t.arr_str": ["a", "", "ccc"],
    });
  });

  test("versions 1 and 2, big-endian, a custom alignment, per-layer head counts", async () => {
    const d = scratch();
    for (const version of [1, 2] as const) {
      const path = join(d, `v${version}.gguf`);
      const w = writeGguf(path, tinyLlamaSpec({ version }));
      expect(await readGgufModel(path)).toEqual({ ...TINY_INFO, version, tensor_data_bytes: w.bytes.length - w.dataOffset });
    }
    const be = join(d, "be.gguf");
    writeGguf(be, { ...tinyLlamaSpec(), littleEndian: false });
    expect((await readGgufModel(be)).block_count).toBe(4);
    const aligned = join(d, "aligned.gguf");
    const w = writeGguf(aligned, { ...tinyLlamaSpec(), alignment: 64 });
    expect(w.dataOffset % 64).toBe(0);
    expect((await readGgufModel(aligned)).tensor_data_bytes).toBe(w.bytes.length - w.dataOffset);
    // OpenELM-style per-layer arrays count by their largest value.
    const perLayer = join(d, "per-layer.gguf");
    const spec = tinyLlamaSpec();
    spec.kv = spec.kv.map((k) => (k.key === "llama.attention.head_count_kv" ? { key: k.key, type: GgufType.ARRAY, itemType: GgufType.INT32, value: [2, 4, 4, 3] } : k));
    writeGguf(perLayer, spec);
    expect((await readGgufModel(perLayer)).head_count_kv).toBe(4);
  });

  test("a truncated file is refused, wherever it was cut", async () => {
    const d = scratch();
    const { bytes, dataOffset } = ggufBytes(tinyLlamaSpec());
    const cut = async (n: number) => {
      const path = join(d, `cut-${n}.gguf`);
      writeFileSync(path, bytes.subarray(0, n));
      return rejection(readGgufModel(path));
    };
    // Cut in the tensor data: the header is whole, the tensors do not fit.
    const inData = await cut(bytes.length - 1);
    expect([inData.status, inData.code, inData.message]).toEqual([
      400, "INVALID_GGUF", `${join(d, `cut-${bytes.length - 1}.gguf`)} is not a valid GGUF file: truncated: the tensors need ${bytes.length} bytes, the file has ${bytes.length - 1}`,
    ]);
    const atData = await cut(dataOffset);
    expect(atData.message).toEndWith(`truncated: the tensors need ${bytes.length} bytes, the file has ${dataOffset}`);
    // Cut inside the header: the parser reads zeros past the end; the header then ends past the file.
    for (const n of [30, 100, 400, dataOffset - 40]) {
      const e = await cut(n);
      expect(e.code).toBe("INVALID_GGUF");
      expect(e.message).toMatch(new RegExp(`is not a valid GGUF file: truncated: the (header needs|tensors need) \\d+ bytes, the file has ${n}$`));
    }
    const tiny = await cut(10);
    expect(tiny.message).toEndWith("is not a valid GGUF file: 10 bytes is too short for a GGUF header (truncated?)");
  });

  test("a file that is not GGUF is refused with a clear error; a missing one is 404", async () => {
    const d = scratch();
    const fake = join(d, "fake.gguf");
    writeFileSync(fake, "GGUF fake model with a long enough body");
    const e1 = await rejection(readGgufModel(fake));
    expect([e1.status, e1.code, e1.message, e1.details]).toEqual([
      400, "INVALID_GGUF", `${fake} is not a valid GGUF file: unsupported version "1801545248"`, { file: fake, reason: 'unsupported version "1801545248"' },
    ]);
    const st = join(d, "model.safetensors");
    writeFileSync(st, Buffer.concat([Buffer.from([8, 0, 0, 0, 0, 0, 0, 0]), Buffer.from('{"a":1}  '), Buffer.alloc(64)]));
    expect((await rejection(readGgufModel(st))).message).toBe(`${st} is not a valid GGUF file: it does not start with the GGUF magic number`);
    const gone = await rejection(readGgufModel(join(d, "nope.gguf")));
    expect([gone.status, gone.code, gone.message]).toEqual([404, "MODEL_FILE_NOT_FOUND", `cannot read ${join(d, "nope.gguf")}: ENOENT`]);
  });

  test("split shards: given any shard, all are read; sizes and counts add up; a missing shard or a wrong count is refused", async () => {
    const d = scratch();
    const base = join(d, "big-Q4_K_M");
    const shard = (i: number, total = 3) => `${base}-0000${i}-of-0000${total}.gguf`;
    let data = 0;
    for (let i = 1; i <= 3; i++) {
      const spec = tinyLlamaSpec({
        extra: [
          { key: "split.no", type: GgufType.UINT16, value: i - 1 },
          { key: "split.count", type: GgufType.UINT16, value: 3 },
        ],
        tensors: [{ name: `blk.${i}.ffn.weight`, shape: [256, i], dtype: 0 }],
      });
      // Real splits carry the model's metadata in the first shard only.
      if (i > 1) spec.kv = spec.kv.filter((k) => k.key.startsWith("split.") || k.key === "general.architecture");
      const w = writeGguf(shard(i), spec);
      data += w.bytes.length - w.dataOffset;
    }
    expect(ggufShardPaths(shard(2))).toEqual([shard(1), shard(2), shard(3)]);
    const info = await readGgufModel(shard(2));
    expect(info).toEqual({ ...TINY_INFO, tensor_count: 3, tensor_data_bytes: data, parameter_count: 256 * 6, shards: 3 });
    expect(data).toBe(256 * 4 * 6);
    await Bun.file(shard(3)).delete();
    const missing = await rejection(readGgufModel(shard(1)));
    expect([missing.status, missing.code, missing.message]).toEqual([404, "MODEL_FILE_NOT_FOUND", `cannot read ${shard(3)}: ENOENT`]);
    // A shard whose metadata says 3 files, named as one of 2.
    const renamed = `${base}-00001-of-00002.gguf`;
    writeFileSync(renamed, await Bun.file(shard(1)).bytes());
    writeFileSync(`${base}-00002-of-00002.gguf`, await Bun.file(shard(2)).bytes());
    expect((await rejection(readGgufModel(renamed))).message).toBe(`${renamed} is not a valid GGUF file: it is shard of a 3-file split set, but its name says 2`);
  });

  test("footprints use the metadata kept in the catalog, without reading the file", async () => {
    const footprints = new ModelFootprints();
    const kept = { ...TINY_INFO, tensor_data_bytes: 123_456 };
    const shape = await footprints.shape({ local_path: "/nowhere/m.gguf", format: "gguf", metadata: { gguf: JSON.parse(JSON.stringify(kept)) }, files: [] });
    expect(shape).toEqual({ weightsBytes: 123_456, contextLength: 2048, layers: 4, embedding: 256, heads: 8, kvHeads: 2, keyLength: null, valueLength: null, kvBytesPerElement: 2 });
  });

  test("the kept parser works inside a compiled binary", async () => {
    const d = scratch();
    const model = join(d, "m.gguf");
    writeGguf(model, tinyLlamaSpec());
    const script = join(d, "probe.ts");
    writeFileSync(script, `import { readGgufModel } from ${JSON.stringify(join(ROOT, "src/resources/gguf.ts"))};\nconsole.log(JSON.stringify(await readGgufModel(process.argv[2]!)));\n`);
    const exe = join(d, "probe");
    const build = Bun.spawnSync([process.execPath, "build", "--compile", script, "--outfile", exe], { cwd: ROOT, stdout: "pipe", stderr: "pipe" });
    expect(build.exitCode).toBe(0);
    // From another directory: nothing may be read from the source tree at run time.
    const run = Bun.spawnSync([exe, model], { cwd: "/", stdout: "pipe", stderr: "pipe", env: { PATH: "/usr/bin:/bin" } });
    expect(run.stderr.toString()).toBe("");
    expect(JSON.parse(run.stdout.toString())).toEqual(await readGgufModel(model));
  }, 60_000);
});

describe("GGUF metadata before a download and at registration", () => {
  test("a remote header by Range requests: only the start of the file is fetched", async () => {
    const d = scratch();
    const { bytes } = ggufBytes(tinyLlamaSpec({ tensors: [{ name: "w", shape: [1024, 1024], dtype: 0 }] })); // 4 MiB of tensor data
    const ranges: string[] = [];
    const server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch(req) {
        const m = /^bytes=(\d+)-(\d+)$/.exec(req.headers.get("range") ?? "");
        if (!m) return new Response("Range required", { status: 400 });
        ranges.push(m[0]);
        const start = Number(m[1]);
        const end = Math.min(Number(m[2]), bytes.length - 1);
        return new Response(bytes.subarray(start, end + 1), { status: 206, headers: { "content-range": `bytes ${start}-${end}/${bytes.length}` } });
      },
    });
    try {
      const local = join(d, "m.gguf");
      writeFileSync(local, bytes);
      const url = `http://127.0.0.1:${server.port}/org/repo/resolve/main/m.gguf`;
      expect(await readGgufModelRemote([{ url, size: bytes.length }])).toEqual(await readGgufModel(local));
      expect(ranges).toEqual(["bytes=0-1999999"]);
      // A listed size smaller than the tensors need: refused, as a truncated local file is.
      expect((await rejection(readGgufModelRemote([{ url, size: bytes.length - 1 }]))).message).toBe(
        `${url} is not a valid GGUF file: truncated: the tensors need ${bytes.length} bytes, the file has ${bytes.length - 1}`,
      );
    } finally {
      server.stop(true);
    }
  });

  test("registration metadata: a GGUF model gets its header's metadata; a non-GGUF .gguf is refused; safetensors get none", async () => {
    const d = scratch();
    const good = join(d, "good.gguf");
    writeGguf(good, tinyLlamaSpec());
    const files = (p: string) => [{ path: p.slice(d.length + 1), local_path: p, size_bytes: Bun.file(p).size }];
    expect(await catalogMetadata({ local_path: good, format: "gguf", files: files(good) })).toEqual({ gguf: await readGgufModel(good) });
    const bad = join(d, "tiny.gguf");
    writeFileSync(bad, "GGUF fake model");
    const e = await rejection(catalogMetadata({ local_path: bad, format: "gguf", files: files(bad) }));
    expect([e.status, e.code, e.message]).toEqual([400, "INVALID_GGUF", `${bad} is not a valid GGUF file: 15 bytes is too short for a GGUF header (truncated?)`]);
    expect(await catalogMetadata({ local_path: d, format: "safetensors", files: [{ path: "model.safetensors", local_path: join(d, "x"), size_bytes: 1 }] })).toEqual({});
  });
});
