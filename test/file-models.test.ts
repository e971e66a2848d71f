/**
 * `file:` models: one canonical ref per path, every walked entry confined to the allowed roots
 * (after resolving symlinks), a bounded async walk that never follows a loop nor stalls other
 * requests, and GET /v1/models listing only models whose files are on disk.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { mkdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import * as fsp from "node:fs/promises";
import { join } from "node:path";
import { parseModelRef, catalogKey } from "../src/models/model-catalog/model-ref.ts";
import { Provisioner, type WalkFs } from "../src/models/provisioner/provisioner.ts";
import { fileRef, memoryLogger, modelDefaults, rejection, startTestHive, tempDir, type TestHive } from "./helpers.ts";
import { tinyLlamaSpec, writeGguf } from "./fixtures/gguf-writer.ts";

const cleanups: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function temp(): string {
  const d = tempDir("rbee-file-models-");
  cleanups.push(d.cleanup);
  return d.path;
}

async function hive(opts: Parameters<typeof startTestHive>[0] = {}): Promise<TestHive> {
  const h = await startTestHive(opts);
  cleanups.push(() => h.close());
  return h;
}

/** A gate the test opens: the walk waits at one directory until then. */
function gatedFs(gateDir: string) {
  let entered!: () => void;
  let open!: () => void;
  const reached = new Promise<void>((r) => (entered = r));
  const gate = new Promise<void>((r) => (open = r));
  const fs: WalkFs = {
    readdir: async (dir) => {
      if (dir.endsWith(gateDir)) {
        entered();
        await gate;
      }
      return fsp.readdir(dir, { withFileTypes: true });
    },
    realpath: (p) => fsp.realpath(p),
    stat: (p) => fsp.stat(p),
  };
  return { fs, reached, open };
}

describe("canonical file: refs", () => {
  test("trailing slash, duplicate slashes and file:/// all name one path", () => {
    for (const ref of ["file:/srv/m/dir", "file:/srv/m/dir/", "file:///srv/m/dir", "file:///srv//m///dir//", "file://srv/m/dir"]) {
      expect(parseModelRef(ref)).toEqual({ provider: "file", modelRef: "file:/srv/m/dir", reference: "/srv/m/dir", path: "/srv/m/dir" });
      expect(catalogKey(ref)).toEqual({ provider: "file", reference: "/srv/m/dir" });
    }
    expect(parseModelRef("file:/")).toMatchObject({ modelRef: "file:/", path: "/" });
    for (const bad of ["file:relative/x", "file:/srv/./x", "file:/srv/x/."]) {
      expect(() => parseModelRef(bad)).toThrow();
    }
  });

  test("one model over HTTP: the same directory with and without a trailing slash or as file:///", async () => {
    const h = await hive();
    const dir = join(h.modelsDir, "st");
    mkdirSync(dir);
    writeFileSync(join(dir, "model.safetensors"), "weights");
    writeFileSync(join(dir, "config.json"), "{}");
    const answers: any[] = [];
    for (const ref of [`file:${dir}`, `file:${dir}/`, `file://${dir}`, `file:${dir.replace(/\//g, "//")}//`]) {
      const res = await h.api("/v1/models/download", { json: { model_ref: ref } });
      expect(res.status).toBe(200);
      answers.push(await res.json());
    }
    for (const a of answers) expect(a).toEqual({ download_id: "cached", local_path: dir, model_ref: `file:${dir}`, joined: false });
    const { models }: any = await (await h.api("/v1/models")).json();
    const dirModels = models.filter((m: any) => m.local_path === dir);
    expect(dirModels.map((m: any) => m.model_ref)).toEqual([`file:${dir}`]);

    const w = await h.spawn({ model_ref: `file:${dir}/` });
    const rec: any = await (await h.api(`/v1/workers/${w.worker_id}`)).json();
    expect(rec.model_ref).toBe(`file:${dir}`);
    // Deleting by another spelling of the same path finds it (and the worker holding it).
    const del = await h.api(`/v1/models?model_ref=${encodeURIComponent(`file://${dir}/`)}`, { method: "DELETE" });
    expect(del.status).toBe(409);
    expect(((await del.json()) as any).error.code).toBe("MODEL_IN_USE");
  });
});

describe("a directory model stays inside the allowed roots", () => {
  test("symlinks that resolve outside the roots are skipped and logged; links inside are kept", async () => {
    const outside = temp();
    mkdirSync(join(outside, "etc"));
    writeFileSync(join(outside, "etc", "adduser.conf"), "secret");
    writeFileSync(join(outside, "passwd"), "root:x:0:0");
    const h = await hive();
    const dir = join(h.modelsDir, "model");
    mkdirSync(join(dir, "sub"), { recursive: true });
    writeFileSync(join(dir, "w.gguf"), "GGUF");
    writeFileSync(join(dir, "sub", "tok.json"), "{}");
    symlinkSync(join(outside, "etc"), join(dir, "linkdir")); // a directory outside
    symlinkSync(join(outside, "passwd"), join(dir, "evil.gguf")); // a file outside
    symlinkSync(join(h.modelsDir, "tiny.gguf"), join(dir, "alias.gguf")); // inside the models dir: fine
    symlinkSync(join(dir, "gone"), join(dir, "dangling.gguf"));

    const res = await h.api("/v1/models/download", { json: { model_ref: `file:${dir}` } });
    expect(res.status).toBe(200);
    const { models }: any = await (await h.api("/v1/models")).json();
    const entry = models.find((m: any) => m.model_ref === `file:${dir}`);
    expect(entry.files.map((f: any) => [f.path, f.local_path, f.size_bytes])).toEqual([
      ["alias.gguf", join(dir, "alias.gguf"), Bun.file(join(h.modelsDir, "tiny.gguf")).size],
      ["sub/tok.json", join(dir, "sub", "tok.json"), 2],
      ["w.gguf", join(dir, "w.gguf"), 4],
    ]);
    const skipped = h.logs.map((l) => JSON.parse(l)).find((l) => l.msg === "file: model entries outside the allowed model roots were skipped");
    expect(skipped).toMatchObject({ level: "warn", model_ref: `file:${dir}`, count: 2 });
    expect([...skipped.paths].sort()).toEqual([join(dir, "evil.gguf"), join(dir, "linkdir")]);
  });

  test("a root that is itself reached through a symlink still confines its entries", async () => {
    const base = temp();
    const realRoot = join(base, "real-root");
    const outside = join(base, "outside");
    mkdirSync(join(realRoot, "m"), { recursive: true });
    mkdirSync(outside);
    writeFileSync(join(realRoot, "m", "a.gguf"), "a");
    writeFileSync(join(outside, "x.gguf"), "x");
    symlinkSync(outside, join(realRoot, "m", "out"));
    symlinkSync(realRoot, join(base, "root-link"));
    const p = new Provisioner({ ...modelDefaults().provisioner, modelsDir: join(base, "models"), allowedRoots: [join(base, "root-link")], logger: memoryLogger() });
    const input = await p.registerLocal(fileRef(`file:${join(base, "root-link", "m")}`));
    expect(input.files.map((f) => f.path)).toEqual(["a.gguf"]);
    expect(input.modelRef).toBe(`file:${join(base, "root-link", "m")}`);
  });
});

describe("the walk is bounded and asynchronous", () => {
  test("five `l -> .` loops: the spawn answers, each file is listed once", async () => {
    const h = await hive();
    const dir = join(h.modelsDir, "loops");
    mkdirSync(dir);
    writeGguf(join(dir, "m.gguf"), tinyLlamaSpec());
    for (let i = 0; i < 5; i++) symlinkSync(".", join(dir, `l${i}`));
    const res = await h.api("/v1/workers/spawn", {
      json: { model_ref: `file:${dir}`, backend: "cpu", device: 0 },
      signal: AbortSignal.timeout(10_000), // hang guard only
    });
    expect(res.status).toBe(200);
    const { models }: any = await (await h.api("/v1/models")).json();
    expect(models.find((m: any) => m.model_ref === `file:${dir}`).files.map((f: any) => f.path)).toEqual(["m.gguf"]);
  }, 30_000);

  test("/v1/health answers while a walk is still running", async () => {
    const gate = gatedFs("/slow/sub");
    const h = await hive({ overrides: { walkFs: gate.fs } });
    const dir = join(h.modelsDir, "slow");
    mkdirSync(join(dir, "sub"), { recursive: true });
    writeGguf(join(dir, "sub", "m.gguf"), tinyLlamaSpec());
    let spawnDone = false;
    const spawn = h.api("/v1/workers/spawn", { json: { model_ref: `file:${dir}`, backend: "cpu", device: 0 } }).then((r) => {
      spawnDone = true;
      return r;
    });
    await gate.reached; // the walk is inside the directory and waits there
    const health = await h.api("/v1/health", { signal: AbortSignal.timeout(10_000) });
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: "alive", catalog: "ok" });
    expect(spawnDone).toBe(false); // health was answered before the walk ended
    gate.open();
    expect((await spawn).status).toBe(200);
  });

  test("too many entries, too deep, or too slow: 413 MODEL_DIR_TOO_LARGE", async () => {
    const base = temp();
    const models = join(base, "models");
    const wide = join(models, "wide");
    mkdirSync(wide, { recursive: true });
    for (let i = 0; i < 20; i++) writeFileSync(join(wide, `f${i}.bin`), "x");
    let deep = join(models, "deep");
    for (let i = 0; i < 5; i++) deep = join(deep, `d${i}`);
    mkdirSync(deep, { recursive: true });
    writeFileSync(join(deep, "m.gguf"), "x");

    const p = new Provisioner({ ...modelDefaults().provisioner, modelsDir: models, walkLimits: { maxEntries: 10, maxDepth: 3, timeoutMs: 60_000 } });
    expect(await rejection(p.registerLocal(fileRef(`file:${wide}`)))).toMatchObject({
      status: 413,
      code: "MODEL_DIR_TOO_LARGE",
      message: `${wide} has more than 10 entries; name one file with file:<path> or split the directory`,
      details: { path: wide, limit: "entries", max_entries: 10 },
    });
    expect(await rejection(p.registerLocal(fileRef(`file:${join(models, "deep")}`)))).toMatchObject({
      status: 413,
      code: "MODEL_DIR_TOO_LARGE",
      message: `${join(models, "deep")} is nested deeper than 3 directories`,
      details: { path: join(models, "deep"), limit: "depth", max_depth: 3 },
    });

    // Time: an injected clock jumps past the deadline once the walk has started.
    let now = 0;
    const slow = new Provisioner({
      ...modelDefaults().provisioner,
      modelsDir: models,
      walkLimits: { maxEntries: 1000, maxDepth: 16, timeoutMs: 5000 },
      walkFs: {
        readdir: async (d) => {
          now += 6000;
          return fsp.readdir(d, { withFileTypes: true });
        },
        realpath: (p) => fsp.realpath(p),
        stat: (p) => fsp.stat(p),
      },
      now: () => now,
    });
    expect(await rejection(slow.registerLocal(fileRef(`file:${join(models, "deep")}`)))).toMatchObject({
      status: 413,
      code: "MODEL_DIR_TOO_LARGE",
      message: `walking ${join(models, "deep")} took longer than 5 s; name one file with file:<path>`,
      details: { path: join(models, "deep"), limit: "time", timeout_s: 5 },
    });
  });
});

describe("GET /v1/models lists only models complete on disk", () => {
  test("a file deleted behind the hive's back hides the model; it returns once the file is back", async () => {
    const h = await hive();
    const dir = join(h.modelsDir, "two");
    mkdirSync(dir);
    writeGguf(join(dir, "a.gguf"), tinyLlamaSpec());
    writeFileSync(join(dir, "b.json"), "{}");
    expect((await h.api("/v1/models/download", { json: { model_ref: `file:${dir}` } })).status).toBe(200);
    expect((await h.api("/v1/models/download", { json: { model_ref: h.modelRef } })).status).toBe(200);
    const refs = async () => ((await (await h.api("/v1/models")).json()) as any).models.map((m: any) => m.model_ref);
    expect(await refs()).toEqual([`file:${dir}`, h.modelRef].sort());

    rmSync(join(dir, "b.json"));
    expect(await refs()).toEqual([h.modelRef]);
    writeFileSync(join(dir, "b.json"), "{}");
    expect(await refs()).toEqual([`file:${dir}`, h.modelRef].sort());

    rmSync(h.modelRef.slice("file:".length));
    writeFileSync(join(dir, "b.json"), "{ }"); // size changed: incomplete too
    expect(await refs()).toEqual([]);
  });
});
