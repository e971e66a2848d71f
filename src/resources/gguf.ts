/**
 * GGUF metadata without the tensors: the header, the key/value metadata and the tensor table of one
 * file or of a split set (`-00001-of-00003.gguf`), through the kept parser `@huggingface/gguf`
 * (it reads 2 MB chunks from the start of the file only). That parser fills bytes past the end
 * of a short file with zeros instead of failing, so every file is also held to its real size here:
 * the header must end inside the file and every tensor of a known type must fit in it.
 */
import { gguf, GGMLFileQuantizationType } from "@huggingface/gguf";
import { stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { HiveError, errorMessage } from "../shared/errors.ts";
import { Nullable, t, type Static } from "../shared/schema.ts";


/** What the hive keeps about a GGUF model (in the catalog's metadata, under `gguf`). */
export const GgufModelInfo = t.Object({
  version: t.Integer(),
  architecture: Nullable(t.String()),
  name: Nullable(t.String()),
  context_length: Nullable(t.Integer()),
  block_count: Nullable(t.Integer({ description: "layers" })),
  embedding_length: Nullable(t.Integer()),
  head_count: Nullable(t.Integer()),
  head_count_kv: Nullable(t.Integer()),
  key_length: Nullable(t.Integer({ description: "per-head K size; default embedding_length / head_count" })),
  value_length: Nullable(t.Integer({ description: "per-head V size; default embedding_length / head_count" })),
  file_type: Nullable(t.Integer()),
  file_type_name: Nullable(t.String({ description: 'e.g. "Q4_K_M"' })),
  tensor_count: t.Integer(),
  tensor_data_bytes: t.Integer({ description: "bytes after the headers, all shards: what a worker loads" }),
  parameter_count: t.Integer(),
  shards: t.Integer(),
});
export type GgufModelInfo = Static<typeof GgufModelInfo>;

/** [elements per block, bytes per block] of ggml tensor types (ggml.c type_traits). */
const GGML_TYPE_SIZE: Record<number, [number, number]> = {
  0: [1, 4], 1: [1, 2], 2: [32, 18], 3: [32, 20], 6: [32, 22], 7: [32, 24], 8: [32, 34], 9: [32, 36],
  10: [256, 84], 11: [256, 110], 12: [256, 144], 13: [256, 176], 14: [256, 210], 15: [256, 292],
  16: [256, 66], 17: [256, 74], 18: [256, 98], 19: [256, 50], 20: [32, 18], 21: [256, 110], 22: [256, 82],
  23: [256, 136], 24: [1, 1], 25: [1, 2], 26: [1, 4], 27: [1, 8], 28: [1, 8], 29: [256, 56], 30: [1, 2],
  34: [256, 54], 35: [256, 66], 39: [32, 17],
};

/** Bytes of one tensor, or null for a type this table does not know (a newer ggml). */
export function ggmlTensorBytes(dtype: number, shape: readonly (number | bigint)[]): number | null {
  const size = GGML_TYPE_SIZE[dtype];
  if (!size) return null;
  const elements = shape.reduce<number>((a, d) => a * Number(d), 1);
  return Math.ceil(elements / size[0]) * size[1];
}

const invalid = (path: string, reason: string) =>
  new HiveError(400, "INVALID_GGUF", `${path} is not a valid GGUF file: ${reason}`, { file: path, reason });

type Meta = Record<string, unknown>;

interface GgufFileHeader {
  version: number;
  metadata: Meta;
  tensorCount: number;
  tensorDataBytes: number;
  parameterCount: number;
}

/** One file's header, checked against the file's size. Throws HiveError 400 INVALID_GGUF. */
export async function readGgufHeader(path: string): Promise<GgufFileHeader> {
  let size: number;
  try {
    const s = await stat(path);
    if (!s.isFile()) throw invalid(path, "not a regular file");
    size = s.size;
  } catch (e) {
    if (e instanceof HiveError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new HiveError(404, "MODEL_FILE_NOT_FOUND", `cannot read ${path}: ${code ?? errorMessage(e)}`, { file: path });
  }
  return parseChecked(path, size, () => gguf(path, { allowLocalFile: true }));
}

/**
 * The header of a remote file (a hub URL) by HTTP Range requests of 2 MB, before any download:
 * `size` is the file's size as the hub lists it. `fetch` carries the token (never to another host).
 */
export async function readGgufHeaderRemote(url: string, size: number, opts: { fetch?: typeof fetch; headers?: Record<string, string> } = {}): Promise<GgufFileHeader> {
  return parseChecked(url, size, () => gguf(url, { fetch: opts.fetch, additionalFetchHeaders: opts.headers }));
}

async function parseChecked(path: string, size: number, parse: () => ReturnType<typeof gguf>): Promise<GgufFileHeader> {
  if (size < 24) throw invalid(path, `${size} bytes is too short for a GGUF header (truncated?)`);
  let parsed: Awaited<ReturnType<typeof gguf>>;
  try {
    parsed = await parse();
  } catch (e) {
    // The hub's own answers (gated, gone, unreachable) are not a verdict on the file.
    if (e instanceof HiveError) throw e;
    const msg = errorMessage(e).replace(/^not a valid gguf file: /, "");
    throw invalid(path, msg === "not starting with GGUF magic number" ? "it does not start with the GGUF magic number" : msg);
  }
  const dataOffset = Number(parsed.tensorDataOffset);
  if (dataOffset > size) throw invalid(path, `truncated: the header needs ${dataOffset} bytes, the file has ${size}`);
  let end = dataOffset;
  let parameters = 0;
  for (const ti of parsed.tensorInfos) {
    parameters += ti.shape.reduce<number>((a, d) => a * Number(d), 1);
    const bytes = ggmlTensorBytes(ti.dtype, ti.shape);
    if (bytes !== null) end = Math.max(end, dataOffset + Number(ti.offset) + bytes);
  }
  if (end > size) throw invalid(path, `truncated: the tensors need ${end} bytes, the file has ${size}`);
  return {
    version: Number(parsed.metadata.version),
    metadata: parsed.metadata as unknown as Meta,
    tensorCount: parsed.tensorInfos.length,
    tensorDataBytes: size - dataOffset,
    parameterCount: parameters,
  };
}

const SHARD = /^(.*)-(\d{5})-of-(\d{5})\.gguf$/;

/** All files of a split set named by any of its shards, in order; a plain file is itself. */
export function ggufShardPaths(path: string): string[] {
  const m = SHARD.exec(basename(path));
  if (!m) return [path];
  const total = Number(m[3]);
  return Array.from({ length: total }, (_, i) => join(dirname(path), `${m[1]}-${String(i + 1).padStart(5, "0")}-of-${m[3]}.gguf`));
}

/** A number from a metadata value (uint64 arrives as bigint; per-layer arrays count by their largest). */
function int(v: unknown): number | null {
  if (typeof v === "bigint") return Number(v);
  if (typeof v === "number" && Number.isFinite(v)) return Math.trunc(v);
  if (Array.isArray(v) && v.length > 0) {
    const nums = v.map(int).filter((n): n is number => n !== null);
    return nums.length ? Math.max(...nums) : null;
  }
  return null;
}

const str = (v: unknown) => (typeof v === "string" ? v : null);

/**
 * The model's metadata from its GGUF file(s): one file, or every shard of a split set (given
 * any shard; a missing shard is an error). Hyperparameters come from the first shard, sizes and
 * counts are summed over all of them.
 */
export async function readGgufModel(path: string): Promise<GgufModelInfo> {
  const paths = ggufShardPaths(path);
  return modelInfo(path, paths.length, await Promise.all(paths.map((p) => readGgufHeader(p))));
}

/**
 * The same from the hub before a download: `files` are every shard's URL and listed size, in
 * order (the provisioner's plan has both).
 */
export async function readGgufModelRemote(files: { url: string; size: number }[], opts: { fetch?: typeof fetch; headers?: Record<string, string> } = {}): Promise<GgufModelInfo> {
  const headers = await Promise.all(files.map((f) => readGgufHeaderRemote(f.url, f.size, opts)));
  return modelInfo(files[0]!.url, files.length, headers);
}

function modelInfo(path: string, shards: number, headers: GgufFileHeader[]): GgufModelInfo {
  const first = headers[0]!;
  const m = first.metadata;
  const arch = str(m["general.architecture"]);
  const key = (k: string) => (arch ? m[`${arch}.${k}`] : undefined);
  const fileType = int(m["general.file_type"]);
  const declaredSplits = int(m["split.count"]);
  if (declaredSplits !== null && declaredSplits > 1 && declaredSplits !== shards) {
    throw invalid(path, `it is shard of a ${declaredSplits}-file split set, but its name says ${shards}`);
  }
  return {
    version: first.version,
    architecture: arch,
    name: str(m["general.name"]),
    context_length: int(key("context_length")),
    block_count: int(key("block_count")),
    embedding_length: int(key("embedding_length")),
    head_count: int(key("attention.head_count")),
    head_count_kv: int(key("attention.head_count_kv")),
    key_length: int(key("attention.key_length")),
    value_length: int(key("attention.value_length")),
    file_type: fileType,
    file_type_name: fileType !== null ? (GGMLFileQuantizationType[fileType] ?? null) : null,
    tensor_count: headers.reduce((s, h) => s + h.tensorCount, 0),
    tensor_data_bytes: headers.reduce((s, h) => s + h.tensorDataBytes, 0),
    parameter_count: headers.reduce((s, h) => s + h.parameterCount, 0),
    shards,
  };
}
