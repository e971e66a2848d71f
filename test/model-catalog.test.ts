import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  ADDED_MODEL_COLUMNS,
  LATEST_SCHEMA_VERSION,
  ModelCatalog,
  UPSTREAM_MODELS_DDL,
  catalogKey,
  parseModelRef,
  validateRevision,
} from "../src/models/model-catalog/index.ts";
import { HiveError } from "../src/shared/errors.ts";
import type { Clock } from "../src/shared/clock.ts";
import { systemClock } from "../src/shared/clock.ts";

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "rbee-catalog-"));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

function catchErr(fn: () => unknown): HiveError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(HiveError);
    return e as HiveError;
  }
  throw new Error("expected an error");
}

function fileOf(name: string, bytes: number) {
  const p = join(dir, name);
  mkdirSync(join(p, ".."), { recursive: true });
  writeFileSync(p, new Uint8Array(bytes));
  return { path: name, local_path: p, size_bytes: bytes, sha256: "a".repeat(64), git_oid: null, blob_path: null };
}

describe("model refs", () => {
  test("each reference form parses", () => {
    expect(parseModelRef("hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF")).toMatchObject({
      provider: "hf",
      repo: "TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF",
      selector: { kind: "default" },
    });
    expect(parseModelRef("hf:org/repo:Q4_K_M")).toMatchObject({ repo: "org/repo", selector: { kind: "quant", quant: "Q4_K_M" } });
    expect(parseModelRef("hf:org/repo/sub/dir/model.Q8_0.gguf")).toMatchObject({
      repo: "org/repo",
      selector: { kind: "file", path: "sub/dir/model.Q8_0.gguf" },
    });
    expect(parseModelRef("file:/var/lib/rbee/models/x.gguf")).toMatchObject({ provider: "file", path: "/var/lib/rbee/models/x.gguf" });
  });

  test("bad refs are 400 INVALID_INPUT with a useful message", () => {
    for (const bad of ["hf:org", "hf:org/", "hf:/repo", "hf:org/repo:Q4:K", "hf:org/repo/a.gguf:Q4_K_M", "file:relative/x.gguf", "hf:org/re$po", "hf:org/../x", "hf:or--g/repo", ""]) {
      const e = catchErr(() => parseModelRef(bad));
      expect(e.status).toBe(400);
      expect(e.code).toBe("INVALID_INPUT");
    }
    // An unknown provider has its own code, the same on every route (models-api.test.ts).
    const provider = catchErr(() => parseModelRef("s3:bucket/x"));
    expect(provider.status).toBe(400);
    expect(provider.code).toBe("UNSUPPORTED_PROVIDER");
    expect(provider.message).toContain("unknown provider");
  });

  test("revisions are validated and keyed", () => {
    expect(validateRevision("v1.0")).toBe("v1.0");
    expect(validateRevision("refs/pr/1")).toBe("refs/pr/1");
    for (const bad of ["", "../x", "a//b", "a b", "x;rm"]) expect(catchErr(() => validateRevision(bad)).status).toBe(400);
    expect(catalogKey("hf:org/repo")).toEqual({ provider: "hf", reference: "org/repo" });
    expect(catalogKey("hf:org/repo", "main")).toEqual({ provider: "hf", reference: "org/repo" });
    expect(catalogKey("hf:org/repo:Q4_K_M", "v2")).toEqual({ provider: "hf", reference: "org/repo:Q4_K_M@v2" });
  });
});

describe("migrations", () => {
  test("fresh database: WAL, busy_timeout, latest schema, upstream columns intact", () => {
    const cat = new ModelCatalog({ path: join(dir, "sub", "catalog.db"), busyTimeoutMs: 1234 });
    expect((cat.db.query("PRAGMA journal_mode").get() as { journal_mode: string }).journal_mode).toBe("wal");
    expect((cat.db.query("PRAGMA busy_timeout").get() as { timeout: number }).timeout).toBe(1234);
    expect((cat.db.query("PRAGMA user_version").get() as { user_version: number }).user_version).toBe(LATEST_SCHEMA_VERSION);
    const cols = cat.db.query("PRAGMA table_info(models)").all() as Array<{ name: string; type: string; notnull: number; pk: number }>;
    // The upstream five, same types / NOT NULL / primary key order
    expect(cols.slice(0, 5).map((c) => [c.name, c.type, c.notnull, c.pk])).toEqual([
      ["reference", "TEXT", 1, 1],
      ["provider", "TEXT", 1, 2],
      ["local_path", "TEXT", 1, 0],
      ["size_bytes", "INTEGER", 1, 0],
      ["downloaded_at", "INTEGER", 1, 0],
    ]);
    expect(cols.map((c) => c.name)).toContain("commit_sha");
    expect(cols.map((c) => c.name)).toContain("last_used_at");
    const sql = (cat.db.query("SELECT sql FROM sqlite_master WHERE name = 'models'").get() as { sql: string }).sql;
    // Exactly the upstream statement, with our nullable columns added before the key constraint.
    const added = ADDED_MODEL_COLUMNS.map(([n, t]) => `, ${n} ${t}`).join("");
    expect(sql).toBe(UPSTREAM_MODELS_DDL.replace(", PRIMARY KEY", `${added}, PRIMARY KEY`));
    cat.close();
  });

  test("existing upstream database keeps its rows and gains the new columns", () => {
    const path = join(dir, "upstream.db");
    const up = new Database(path);
    up.run(UPSTREAM_MODELS_DDL);
    writeFileSync(join(dir, "tiny.gguf"), "gguf");
    up.run("INSERT INTO models VALUES (?, ?, ?, ?, ?)", ["TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF", "hf", join(dir, "tiny.gguf"), 4, 1729350000]);
    up.close();

    const cat = new ModelCatalog({ path });
    expect((cat.db.query("PRAGMA user_version").get() as { user_version: number }).user_version).toBe(LATEST_SCHEMA_VERSION);
    const e = cat.get("hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF")!;
    expect(e).not.toBeNull();
    expect(e.local_path).toBe(join(dir, "tiny.gguf"));
    expect(e.size_bytes).toBe(4);
    expect(e.downloaded_at).toBe(1729350000);
    expect(e.commit).toBeNull();
    expect(e.files).toEqual([]);
    expect(cat.checkOnDisk(e).ok).toBe(true);
    cat.close();

    // Reopening applies nothing twice, and an upstream reader still works on the file.
    const again = new ModelCatalog({ path });
    expect(again.list()).toHaveLength(1);
    again.close();
    const reader = new Database(path, { readonly: true });
    expect(reader.query("SELECT reference, provider, local_path, size_bytes, downloaded_at FROM models").all()).toHaveLength(1);
    reader.close();
  });

  test("a schema newer than the code is refused", () => {
    const path = join(dir, "new.db");
    const db = new Database(path);
    db.run(`PRAGMA user_version = ${LATEST_SCHEMA_VERSION + 5}`);
    db.close();
    const e = catchErr(() => new ModelCatalog({ path }));
    expect(e.code).toBe("CATALOG_SCHEMA_TOO_NEW");
  });
});

describe("catalog", () => {
  test("register, get, list, revisions, touch, remove", () => {
    let now = 1_700_000_000_000;
    const clock: Clock = { ...systemClock, now: () => now };
    const cat = new ModelCatalog({ path: join(dir, "c.db"), clock });
    const a = fileOf("snap/a.gguf", 10);
    const entry = cat.register({
      modelRef: "hf:org/repo:Q4_K_M",
      commit: "c".repeat(40),
      local_path: a.local_path,
      format: "gguf",
      quantization: "Q4_K_M",
      metadata: { repo: "org/repo" },
      files: [a],
    });
    expect(entry).toMatchObject({
      model_ref: "hf:org/repo:Q4_K_M",
      provider: "hf",
      reference: "org/repo:Q4_K_M",
      size_bytes: 10,
      downloaded_at: 1_700_000_000,
      commit: "c".repeat(40),
      quantization: "Q4_K_M",
      metadata: { repo: "org/repo" },
      last_used_at: null,
    });
    expect(entry.files).toEqual([a]);

    const b = fileOf("snap2/b.gguf", 7);
    cat.register({ modelRef: "hf:org/repo:Q4_K_M", revision: "v2", local_path: b.local_path, files: [b] });
    expect(cat.get("hf:org/repo:Q4_K_M")!.size_bytes).toBe(10);
    expect(cat.get("hf:org/repo:Q4_K_M", "v2")!).toMatchObject({ size_bytes: 7, revision: "v2", model_ref: "hf:org/repo:Q4_K_M" });
    expect(cat.list().map((e) => e.reference).sort()).toEqual(["org/repo:Q4_K_M", "org/repo:Q4_K_M@v2"]);

    now += 5000;
    cat.touch("hf:org/repo:Q4_K_M");
    expect(cat.get("hf:org/repo:Q4_K_M")!.last_used_at).toBe(1_700_000_005);

    expect(cat.remove("hf:org/repo:Q4_K_M", "v2")).toBe(true);
    expect(cat.get("hf:org/repo:Q4_K_M", "v2")).toBeNull();
    expect(cat.db.query("SELECT count(*) AS n FROM model_files").get()).toEqual({ n: 1 }); // cascade
    expect(cat.remove("hf:org/repo:Q4_K_M", "v2")).toBe(false);
    cat.close();
  });

  test("a model whose files are not complete on disk is never registered", () => {
    const cat = new ModelCatalog({ path: join(dir, "c.db") });
    const a = fileOf("a.gguf", 10);
    const e = catchErr(() =>
      cat.register({ modelRef: "hf:org/x", local_path: a.local_path, files: [a, { ...a, path: "b.gguf", local_path: join(dir, "b.gguf") }] }),
    );
    expect(e.code).toBe("CATALOG_FILES_INCOMPLETE");
    const short = catchErr(() => cat.register({ modelRef: "hf:org/x", local_path: a.local_path, files: [{ ...a, size_bytes: 11 }] }));
    expect(short.message).toContain("size 10 != 11");
    expect(cat.get("hf:org/x")).toBeNull();
    expect(cat.db.query("SELECT count(*) AS n FROM model_files").get()).toEqual({ n: 0 });

    // checkOnDisk notices a file that disappeared later
    cat.register({ modelRef: "hf:org/x", local_path: a.local_path, files: [a] });
    rmSync(a.local_path);
    expect(cat.checkOnDisk(cat.get("hf:org/x")!)).toEqual({ ok: false, problems: ["a.gguf: missing"] });
    cat.close();
  });

  test("re-registering replaces the file list in one transaction", () => {
    const cat = new ModelCatalog({ path: join(dir, "c.db") });
    const a = fileOf("a.gguf", 3);
    const b = fileOf("b.gguf", 4);
    cat.register({ modelRef: "hf:org/x", local_path: a.local_path, files: [a, b] });
    cat.register({ modelRef: "hf:org/x", local_path: b.local_path, files: [b] });
    const e = cat.get("hf:org/x")!;
    expect(e.files.map((f) => f.path)).toEqual(["b.gguf"]);
    expect(e.size_bytes).toBe(4);
    cat.close();
  });
});
