import { describe, expect, test } from "bun:test";
import { HiveError } from "../src/shared/errors.ts";
import {
  resolveInside,
  splitModelRef,
  validateIdentifier,
  validateModelRef,
  validatePathUnderRoots,
} from "../src/shared/input-validation.ts";

function rejects(fn: () => unknown, pattern: RegExp) {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(HiveError);
  expect((err as HiveError).status).toBe(400);
  expect((err as HiveError).code).toBe("INVALID_INPUT");
  expect((err as HiveError).message).toMatch(pattern);
}

describe("model_ref", () => {
  test("accepts upstream forms and splits at the first colon", () => {
    expect(validateModelRef("hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF")).toBe("hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF");
    expect(validateModelRef("hf:org/repo:Q4_K_M")).toBe("hf:org/repo:Q4_K_M");
    expect(validateModelRef("file:/models/x.gguf")).toBe("file:/models/x.gguf");
    expect(splitModelRef("hf:org/repo:Q4_K_M")).toEqual({ provider: "hf", reference: "org/repo:Q4_K_M" });
  });

  test("rejects empty, too long and non-string", () => {
    rejects(() => validateModelRef(""), /required/);
    rejects(() => validateModelRef(undefined), /required/);
    rejects(() => validateModelRef("hf:" + "a".repeat(510)), /513 bytes/);
  });

  test("rejects shell metacharacters, naming the character and its position", () => {
    for (const ch of [";", "|", "&", "$", "`", "(", ">", "<", " ", "\n", "*", "'", '"', "\\"]) {
      rejects(() => validateModelRef(`hf:org/repo${ch}rm`), /position 11/);
    }
    rejects(() => validateModelRef("hf:org/repo;rm -rf /"), /shell metacharacter ';'/);
    rejects(() => validateModelRef("hf:org/re\0po"), /NUL/);
  });

  test("rejects path traversal", () => {
    rejects(() => validateModelRef("file:/models/../etc/passwd"), /traversal/);
    rejects(() => validateModelRef("hf:../../x"), /traversal/);
  });

  test("needs provider:reference", () => {
    rejects(() => validateModelRef("TheBloke/TinyLlama"), /<provider>:<reference>/);
    rejects(() => validateModelRef(":x"), /<provider>:<reference>/);
    rejects(() => validateModelRef("hf:"), /<provider>:<reference>/);
  });
});

describe("identifiers", () => {
  test("accept [A-Za-z0-9_-] and reject the rest", () => {
    expect(validateIdentifier("worker-6f1c_2", "worker_id")).toBe("worker-6f1c_2");
    rejects(() => validateIdentifier("cuda;reboot", "backend"), /backend contains the shell metacharacter ';' at position 4/);
    rejects(() => validateIdentifier("a/b", "backend"), /'\/'/);
    rejects(() => validateIdentifier("", "backend"), /required/);
    rejects(() => validateIdentifier("x".repeat(129), "worker_id"), /at most 128/);
  });
});

describe("paths", () => {
  test("resolveInside keeps hub file names inside their directory", () => {
    expect(resolveInside("/cache/snap", "sub/model.gguf")).toBe("/cache/snap/sub/model.gguf");
    rejects(() => resolveInside("/cache/snap", "../../etc/passwd"), /traversal/);
    rejects(() => resolveInside("/cache/snap", "/etc/passwd"), /relative/);
    rejects(() => resolveInside("/cache/snap", "a\\..\\b"), /'\/' separators/);
    rejects(() => resolveInside("/cache/snap", "a/./b"), /traversal/);
  });

  test("validatePathUnderRoots allows only configured roots", () => {
    expect(validatePathUnderRoots("/models/x.gguf", ["/models"])).toBe("/models/x.gguf");
    rejects(() => validatePathUnderRoots("/modelsevil/x.gguf", ["/models"]), /outside the allowed model roots/);
    rejects(() => validatePathUnderRoots("/models/../etc/shadow", ["/models"]), /traversal/);
    rejects(() => validatePathUnderRoots("models/x", ["/models"]), /absolute/);
  });
});
