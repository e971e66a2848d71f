/**
 * Provisioner against the fake hub over real loopback HTTP: reference forms, file selection,
 * HF cache layout, hub error codes, token handling.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Provisioner, type ProvisionerOptions } from "../src/models/provisioner/index.ts";
import { HfCacheRepo } from "../src/models/provisioner/hf-cache.ts";
import { HiveError } from "../src/shared/errors.ts";
import { FakeHub, deterministicBytes, fakeCommit } from "./fixtures/fake-hub.ts";
import { fileRef, hfRef, modelDefaults, rejection } from "./helpers.ts";

let dir: string;
let hub: FakeHub;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), "rbee-prov-"));
  hub = await FakeHub.start();
});
afterEach(async () => {
  await hub.stop();
  rmSync(dir, { recursive: true, force: true });
});

function prov(extra: Partial<ProvisionerOptions> = {}): Provisioner {
  return new Provisioner({
    ...modelDefaults().provisioner,
    modelsDir: join(dir, "models"),
    endpoint: hub.url,
    partSizeBytes: 256 * 1024,
    maxParallelParts: 4,
    retryBaseMs: 5,
    retryMaxMs: 50,
    stallTimeoutMs: 2000,
    diskMarginBytes: 0,
    ...extra,
  });
}


const GGUF_REPO = {
  id: "TheBloke/Tiny-GGUF",
  files: [
    { path: "README.md", content: "# tiny" },
    { path: "config.json", content: '{"model_type":"llama"}' },
    { path: "tiny.Q2_K.gguf", size: 3000, seed: 1 },
    { path: "tiny.Q4_0.gguf", size: 4000, seed: 2 },
    { path: "tiny.Q4_K_M.gguf", size: 700_000, seed: 3 },
    { path: "tiny.Q8_0.gguf", size: 8000, seed: 4 },
    { path: "mmproj-tiny-Q4_K_M.gguf", size: 500, seed: 5 },
  ],
};

describe("reference forms and file choice", () => {
  test("hf:org/repo picks Q4_K_M and lays out the HF cache like the hf CLI", async () => {
    const { commit, files } = hub.addRepo(GGUF_REPO);
    const r = await prov().download("hf:TheBloke/Tiny-GGUF");
    const repoDir = join(dir, "models", "models--TheBloke--Tiny-GGUF");
    const sha = files["tiny.Q4_K_M.gguf"]!.sha256;
    expect(r.files.map((f) => f.path)).toEqual(["tiny.Q4_K_M.gguf"]);
    expect(r.quantization).toBe("Q4_K_M");
    expect(r.format).toBe("gguf");
    expect(r.commit).toBe(commit);
    expect(r.local_path).toBe(join(repoDir, "snapshots", commit, "tiny.Q4_K_M.gguf"));
    // blob named by sha256, snapshot = relative symlink, refs/main = commit
    expect(lstatSync(r.local_path).isSymbolicLink()).toBe(true);
    expect(readlinkSync(r.local_path)).toBe(`../../blobs/${sha}`);
    expect(readFileSync(join(repoDir, "refs", "main"), "utf8")).toBe(commit);
    expect(new Uint8Array(readFileSync(r.local_path))).toEqual(deterministicBytes(700_000, 3));
    expect(r.files[0]!.sha256).toBe(sha);
    // no partial/state files left behind
    expect(existsSync(join(repoDir, "blobs", `${sha}.rbee-partial`))).toBe(false);
    expect(existsSync(join(repoDir, "blobs", `${sha}.rbee-partial.json`))).toBe(false);
  });

  test("a configurable preference order is honoured", async () => {
    hub.addRepo(GGUF_REPO);
    const r = await prov({ quantPreference: ["Q8_0", "Q4_K_M"] }).download("hf:TheBloke/Tiny-GGUF");
    expect(r.files.map((f) => f.path)).toEqual(["tiny.Q8_0.gguf"]);
    expect(r.quantization).toBe("Q8_0");
  });

  test("hf:org/repo:QUANT picks that quantization, an absent one lists what exists", async () => {
    hub.addRepo(GGUF_REPO);
    const p = prov();
    const r = await p.download("hf:TheBloke/Tiny-GGUF:Q2_K");
    expect(r.files.map((f) => f.path)).toEqual(["tiny.Q2_K.gguf"]);
    expect(r.quantization).toBe("Q2_K");
    const lower = await p.plan(hfRef("hf:TheBloke/Tiny-GGUF:q8_0"));
    expect(lower.files.map((f) => f.remote.path)).toEqual(["tiny.Q8_0.gguf"]);
    const e = await rejection(p.plan(hfRef("hf:TheBloke/Tiny-GGUF:Q5_K_M")));
    expect(e.status).toBe(404);
    expect(e.code).toBe("MODEL_FILE_NOT_FOUND");
    expect(e.details!.available).toEqual(["Q2_K", "Q4_0", "Q4_K_M", "Q8_0"]);
    // Q4_K does not match Q4_K_M; Q4 alone matches nothing: never a substitute
    expect((await rejection(p.plan(hfRef("hf:TheBloke/Tiny-GGUF:Q4_K")))).code).toBe("MODEL_FILE_NOT_FOUND");
  });

  test("two files matching the quantization are an ambiguity error listing both", async () => {
    hub.addRepo({
      id: "org/amb-GGUF",
      files: [
        { path: "a.Q4_K_M.gguf", size: 100, seed: 1 },
        { path: "b-Q4_K_M.gguf", size: 100, seed: 2 },
        { path: "a.Q8_0.gguf", size: 100, seed: 3 },
      ],
    });
    const e = await rejection(prov().plan(hfRef("hf:org/amb-GGUF")));
    expect(e.status).toBe(400);
    expect(e.code).toBe("AMBIGUOUS_MODEL_FILES");
    expect(e.details!.candidates).toEqual(["a.Q4_K_M.gguf", "b-Q4_K_M.gguf"]);
    expect(e.message).toContain("hf:org/amb-GGUF:<QUANT>");
    // the explicit quant is just as ambiguous; an exact file resolves it
    expect((await rejection(prov().plan(hfRef("hf:org/amb-GGUF:Q4_K_M")))).code).toBe("AMBIGUOUS_MODEL_FILES");
    const exact = await prov().plan(hfRef("hf:org/amb-GGUF/b-Q4_K_M.gguf"));
    expect(exact.files.map((f) => f.remote.path)).toEqual(["b-Q4_K_M.gguf"]);
  });

  test("no preferred quantization and several models: ambiguous, no substitute", async () => {
    hub.addRepo({ id: "org/odd-GGUF", files: [{ path: "m-IQ2_XS.gguf", size: 10 }, { path: "m-IQ3_M.gguf", size: 10 }] });
    const e = await rejection(prov().plan(hfRef("hf:org/odd-GGUF")));
    expect(e.code).toBe("AMBIGUOUS_MODEL_FILES");
    expect(e.details!.candidates).toEqual(["m-IQ2_XS.gguf", "m-IQ3_M.gguf"]);
    hub.addRepo({ id: "org/one-GGUF", files: [{ path: "only-IQ2_XS.gguf", size: 10 }] });
    expect((await prov().plan(hfRef("hf:org/one-GGUF"))).files.map((f) => f.remote.path)).toEqual(["only-IQ2_XS.gguf"]);
  });

  test("split GGUF shards are one model, taken together", async () => {
    hub.addRepo({
      id: "org/big-GGUF",
      files: [
        { path: "Q4_K_M/big-Q4_K_M-00001-of-00003.gguf", size: 300_000, seed: 1 },
        { path: "Q4_K_M/big-Q4_K_M-00002-of-00003.gguf", size: 300_000, seed: 2 },
        { path: "Q4_K_M/big-Q4_K_M-00003-of-00003.gguf", size: 100_000, seed: 3 },
        { path: "Q8_0/big-Q8_0-00001-of-00002.gguf", size: 10, seed: 4 },
        { path: "Q8_0/big-Q8_0-00002-of-00002.gguf", size: 10, seed: 5 },
      ],
    });
    const p = prov();
    const r = await p.download("hf:org/big-GGUF");
    expect(r.files.map((f) => f.path)).toEqual([
      "Q4_K_M/big-Q4_K_M-00001-of-00003.gguf",
      "Q4_K_M/big-Q4_K_M-00002-of-00003.gguf",
      "Q4_K_M/big-Q4_K_M-00003-of-00003.gguf",
    ]);
    expect(r.local_path.endsWith("Q4_K_M/big-Q4_K_M-00001-of-00003.gguf")).toBe(true);
    expect(r.size_bytes).toBe(700_000);
    // nested snapshot links are relative too
    expect(readlinkSync(r.files[1]!.local_path)).toStartWith("../../../blobs/");
    // naming one shard brings the whole set
    const one = await p.plan(hfRef("hf:org/big-GGUF/Q8_0/big-Q8_0-00002-of-00002.gguf"));
    expect(one.files.map((f) => f.remote.path)).toEqual(["Q8_0/big-Q8_0-00001-of-00002.gguf", "Q8_0/big-Q8_0-00002-of-00002.gguf"]);
    expect(one.localPath.endsWith("big-Q8_0-00001-of-00002.gguf")).toBe(true);
  });

  test("an incomplete shard set is refused", async () => {
    hub.addRepo({
      id: "org/broken-GGUF",
      files: [
        { path: "m-Q4_K_M-00001-of-00003.gguf", size: 10 },
        { path: "m-Q4_K_M-00003-of-00003.gguf", size: 10 },
      ],
    });
    const e = await rejection(prov().plan(hfRef("hf:org/broken-GGUF")));
    expect(e.code).toBe("INCOMPLETE_SHARD_SET");
  });

  test("hf:org/repo/<path> takes one exact file; a missing one is 404", async () => {
    hub.addRepo(GGUF_REPO);
    const r = await prov().download("hf:TheBloke/Tiny-GGUF/tiny.Q4_0.gguf");
    expect(r.files.map((f) => f.path)).toEqual(["tiny.Q4_0.gguf"]);
    expect(r.quantization).toBe("Q4_0");
    const e = await rejection(prov().plan(hfRef("hf:TheBloke/Tiny-GGUF/nope.gguf")));
    expect(e.status).toBe(404);
    expect(e.code).toBe("MODEL_FILE_NOT_FOUND");
  });

  test("safetensors repos: top-level weights + config/tokenizer, git-sha1 verified small files", async () => {
    hub.addRepo({
      id: "org/st",
      files: [
        { path: "model-00001-of-00002.safetensors", size: 300_000, seed: 1 },
        { path: "model-00002-of-00002.safetensors", size: 200_000, seed: 2 },
        { path: "model.safetensors.index.json", content: '{"weight_map":{}}' },
        { path: "config.json", content: '{"hidden_size":8}' },
        { path: "tokenizer.json", content: '{"model":{}}' },
        { path: "tokenizer_config.json", content: "{}" },
        { path: "README.md", content: "readme" },
        { path: "original/consolidated.safetensors", size: 1000, seed: 9 },
        { path: "onnx/model.onnx", size: 100, seed: 8 },
      ],
    });
    const r = await prov().download("hf:org/st");
    expect(r.format).toBe("safetensors");
    expect(r.files.map((f) => f.path).sort()).toEqual([
      "config.json",
      "model-00001-of-00002.safetensors",
      "model-00002-of-00002.safetensors",
      "model.safetensors.index.json",
      "tokenizer.json",
      "tokenizer_config.json",
    ]);
    expect(r.local_path).toBe(join(dir, "models", "models--org--st", "snapshots", r.commit!));
    const cfg = r.files.find((f) => f.path === "config.json")!;
    expect(cfg.sha256).toBeNull();
    expect(cfg.git_oid).toMatch(/^[0-9a-f]{40}$/);
    expect(readlinkSync(cfg.local_path)).toBe(`../../blobs/${cfg.git_oid}`);
    expect(readFileSync(join(r.local_path, "config.json"), "utf8")).toBe('{"hidden_size":8}');
  });

  test("a repo with neither GGUF nor safetensors is refused with the file list", async () => {
    hub.addRepo({ id: "org/pt", files: [{ path: "pytorch_model.bin", size: 10 }, { path: "config.json", content: "{}" }] });
    const e = await rejection(prov().plan(hfRef("hf:org/pt")));
    expect(e.status).toBe(400);
    expect(e.code).toBe("UNSUPPORTED_MODEL_FORMAT");
    expect(e.details!.files).toContain("pytorch_model.bin");
  });

  test("a revision (tag or commit) pins the files; refs/<tag> records the commit", async () => {
    const old = fakeCommit("old");
    hub.addRepo({
      id: "org/rev-GGUF",
      files: [{ path: "m.Q4_K_M.gguf", size: 1000, seed: 2 }],
      commits: [{ commit: old, refs: ["v1.0"], files: [{ path: "m.Q4_K_M.gguf", size: 900, seed: 1 }] }],
    });
    const p = prov();
    const r = await p.download("hf:org/rev-GGUF", { revision: "v1.0" });
    expect(r.commit).toBe(old);
    expect(r.revision).toBe("v1.0");
    expect(r.size_bytes).toBe(900);
    expect(readFileSync(join(dir, "models", "models--org--rev-GGUF", "refs", "v1.0"), "utf8")).toBe(old);
    const byCommit = await p.plan(hfRef("hf:org/rev-GGUF"), { revision: old });
    expect(byCommit.commit).toBe(old);
    const e = await rejection(p.plan(hfRef("hf:org/rev-GGUF"), { revision: "v9" }));
    expect(e.status).toBe(404);
    expect(e.code).toBe("REVISION_NOT_FOUND");
    expect((await rejection(p.download("hf:org/rev-GGUF", { revision: "../../etc" }))).code).toBe("INVALID_INPUT"); // checked where the ref enters
  });

  test("tree listings are followed across Link pages", async () => {
    await hub.stop();
    hub = await FakeHub.start({ treePageSize: 2 });
    hub.addRepo(GGUF_REPO);
    const r = await prov().plan(hfRef("hf:TheBloke/Tiny-GGUF"));
    expect(r.files.map((f) => f.remote.path)).toEqual(["tiny.Q4_K_M.gguf"]);
    expect(hub.log.filter((e) => e.path.includes("/tree/")).length).toBeGreaterThanOrEqual(4);
  });

  test("hub file names that try to escape the snapshot are rejected", async () => {
    hub.addRepo({ id: "org/evil-GGUF", files: [{ path: "sub/../../../../escape.gguf", size: 10 }] });
    const e = await rejection(prov().download("hf:org/evil-GGUF"));
    expect(e.code).toBe("INVALID_INPUT");
    expect(existsSync(join(dir, "escape.gguf"))).toBe(false);
    expect(hub.contentRequests()).toHaveLength(0);
  });
});

describe("file: models", () => {
  test("registered only under the models dir or an allowed root", async () => {
    const models = join(dir, "models");
    const extra = join(dir, "extra");
    const outside = join(dir, "outside");
    for (const d of [models, extra, outside]) mkdirSync(d, { recursive: true });
    writeFileSync(join(models, "a.Q4_0.gguf"), "abc");
    writeFileSync(join(extra, "b.gguf"), "abcd");
    writeFileSync(join(outside, "c.gguf"), "x");
    mkdirSync(join(extra, "st"));
    writeFileSync(join(extra, "st", "model.safetensors"), "12345");
    writeFileSync(join(extra, "st", "config.json"), "{}");
    symlinkSync(join(outside, "c.gguf"), join(extra, "sneaky.gguf"));
    const p = prov({ allowedRoots: [extra] });

    const a = await p.registerLocal(fileRef(`file:${join(models, "a.Q4_0.gguf")}`));
    expect(a).toMatchObject({ local_path: join(models, "a.Q4_0.gguf"), format: "gguf", quantization: "Q4_0" });
    expect(a.files).toEqual([
      { path: "a.Q4_0.gguf", local_path: join(models, "a.Q4_0.gguf"), size_bytes: 3, sha256: null, git_oid: null, blob_path: null },
    ]);
    expect((await p.registerLocal(fileRef(`file:${join(extra, "b.gguf")}`))).files[0]!.size_bytes).toBe(4);
    const st = await p.registerLocal(fileRef(`file:${join(extra, "st")}`));
    expect(st.format).toBe("safetensors");
    expect(st.files.map((f) => f.path).sort()).toEqual(["config.json", "model.safetensors"]);

    const err = (ref: string) => rejection(p.registerLocal(fileRef(ref)));
    expect((await err(`file:${join(outside, "c.gguf")}`)).code).toBe("INVALID_INPUT");
    expect((await err(`file:${join(extra, "sneaky.gguf")}`)).message).toContain("outside the allowed model roots");
    expect(await err(`file:${join(models, "missing.gguf")}`)).toMatchObject({ status: 404, code: "MODEL_NOT_FOUND" });
  });
});

describe("hub errors and the token", () => {
  test("unknown repo → 404 MODEL_NOT_FOUND (also when the hub answers 401 + RepoNotFound)", async () => {
    const e = await rejection(prov().plan(hfRef("hf:nobody/nothing")));
    expect(e.status).toBe(404);
    expect(e.code).toBe("MODEL_NOT_FOUND");
    await hub.stop();
    hub = await FakeHub.start({ missingRepoStatus: 401 });
    const e2 = await rejection(prov().plan(hfRef("hf:nobody/nothing")));
    expect(e2.code).toBe("MODEL_NOT_FOUND");
    expect(e2.message).toContain("HF_TOKEN");
  });

  test("gated repo without/with a wrong token → 403 MODEL_GATED with a hint", async () => {
    hub.addRepo({ id: "meta/gated-GGUF", gated: { token: "hf_right" }, files: [{ path: "g.Q4_K_M.gguf", size: 1000 }] });
    const e = await rejection(prov().plan(hfRef("hf:meta/gated-GGUF")));
    expect(e.status).toBe(403);
    expect(e.code).toBe("MODEL_GATED");
    expect(e.message).toContain("set HF_TOKEN");
    const wrong = await rejection(prov({ token: "hf_wrong" }).plan(hfRef("hf:meta/gated-GGUF")));
    expect(wrong.code).toBe("MODEL_GATED");
    expect(wrong.message).not.toContain("hf_wrong");
    expect(JSON.stringify(wrong.details)).not.toContain("hf_wrong");
  });

  for (const hosts of [{}, { hubHost: "localhost" }, { cdnHost: "localhost" }] as const) {
    const where = "hubHost" in hosts ? "hub as localhost, CDN as 127.0.0.1" : "cdnHost" in hosts ? "CDN as localhost, hub as 127.0.0.1" : "same host name, another port";
    test(`the token reaches the hub but never the redirect (CDN) host (${where})`, async () => {
      await hub.stop();
      hub = await FakeHub.start(hosts);
      hub.addRepo({ id: "meta/gated-GGUF", gated: { token: "hf_secret" }, files: [{ path: "g.Q4_K_M.gguf", size: 600_000, seed: 3 }] });
      const r = await prov({ token: "hf_secret" }).download("hf:meta/gated-GGUF");
      expect(r.size_bytes).toBe(600_000);
      const hubHost = new URL(hub.url).host;
      const cdnHost = new URL(hub.cdnUrl).host;
      const hubReqs = hub.log.filter((e) => e.server === "hub");
      const cdnReqs = hub.log.filter((e) => e.server === "cdn");
      expect(hubReqs.length).toBeGreaterThan(0);
      expect(cdnReqs.length).toBeGreaterThan(0);
      expect(hubReqs.map((e) => [e.host, e.authorization])).toEqual(hubReqs.map(() => [hubHost, "Bearer hf_secret"]));
      expect(cdnReqs.map((e) => [e.host, e.authorization])).toEqual(cdnReqs.map(() => [cdnHost, null]));
      expect(hub.bytesServed((e) => e.server === "cdn")).toBe(600_000);
    });
  }

  test("HEAD metadata: commit, linked etag and size", async () => {
    const { commit, files } = hub.addRepo(GGUF_REPO);
    const meta = await prov().client.fileMetadata("TheBloke/Tiny-GGUF", "main", "tiny.Q4_0.gguf");
    expect(meta).toEqual({ repoCommit: commit, linkedEtag: files["tiny.Q4_0.gguf"]!.sha256, linkedSize: 4000, etag: files["tiny.Q4_0.gguf"]!.sha256 });
    expect((await rejection(prov().client.fileMetadata("TheBloke/Tiny-GGUF", "main", "nope.gguf"))).code).toBe("MODEL_FILE_NOT_FOUND");
  });

  test("a dead hub is HUB_UNREACHABLE after the retries", async () => {
    const p = new Provisioner({ ...modelDefaults().provisioner, modelsDir: join(dir, "models"), endpoint: "http://127.0.0.1:1", maxRetries: 2, retryBaseMs: 1 });
    const e = await rejection(p.plan(hfRef("hf:org/x")));
    expect(e.status).toBe(502);
    expect(e.code).toBe("HUB_UNREACHABLE");
    expect(e.details!.attempts).toBe(3);
  });

  test("HfCacheRepo refuses traversal in revisions", () => {
    const c = new HfCacheRepo(join(dir, "models"), "org/x");
    expect(() => c.writeRef("../../x", "a".repeat(40))).toThrow(HiveError);
  });
});
