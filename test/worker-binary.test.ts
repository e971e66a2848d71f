import { afterEach, expect, test } from "bun:test";
import { chmodSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { resolveWorkerBinary } from "../src/workers/worker-binary.ts";
import { HiveError } from "../src/shared/errors.ts";
import { tempDir } from "./helpers.ts";

const cleanups: Array<() => void> = [];
afterEach(() => cleanups.splice(0).forEach((c) => c()));

function exe(dir: string, name: string): string {
  mkdirSync(dir, { recursive: true });
  const p = join(dir, name);
  writeFileSync(p, "#!/bin/sh\n");
  chmodSync(p, 0o755);
  return p;
}

test("lookup order: profile path, RBEE_WORKER_BINARY, beside the hive, PATH", () => {
  const d = tempDir();
  cleanups.push(d.cleanup);
  const hiveDir = join(d.path, "hive");
  const configured = exe(join(d.path, "opt"), "my-worker");
  const beside = exe(hiveDir, "llm-worker-rbee");
  const base = { profileName: "p", execDir: hiveDir };

  const explicit = exe(join(d.path, "explicit"), "w");
  expect(resolveWorkerBinary({ ...base, binary: explicit, configuredBinary: configured })).toBe(explicit);
  expect(resolveWorkerBinary({ ...base, binary: "llm-worker-rbee", configuredBinary: configured })).toBe(configured);
  expect(resolveWorkerBinary({ ...base, binary: "llm-worker-rbee", configuredBinary: "" })).toBe(beside);
  // Not beside the hive: found on PATH.
  expect(resolveWorkerBinary({ ...base, binary: "sh", configuredBinary: configured })).toBe(Bun.which("sh")!);
});

test("a missing or non-executable binary is a clear error naming where it looked", () => {
  const d = tempDir();
  cleanups.push(d.cleanup);
  const notExec = join(d.path, "plain");
  writeFileSync(notExec, "x");
  const fix = "set RBEE_WORKER_BINARY or [workers] binary";
  const cases: Array<[Parameters<typeof resolveWorkerBinary>[0], string]> = [
    [
      { profileName: "p", execDir: d.path, binary: notExec, configuredBinary: "" },
      `worker binary for profile "p" not found or not executable (looked at: ${notExec}); ${fix}`,
    ],
    [
      { profileName: "p", execDir: d.path, binary: "llm-worker-rbee", configuredBinary: join(d.path, "missing") },
      `worker binary for profile "p" not found or not executable (looked at: ${join(d.path, "missing")}); ${fix}`,
    ],
    [
      { profileName: "p", execDir: d.path, binary: "no-such-worker-binary", configuredBinary: "" },
      `worker binary for profile "p" not found or not executable (looked at: ${join(d.path, "no-such-worker-binary")}, no-such-worker-binary on PATH); ${fix}`,
    ],
  ];
  for (const [lookup, message] of cases) {
    let err: unknown;
    try {
      resolveWorkerBinary(lookup);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(HiveError);
    expect(err).toMatchObject({ status: 500, code: "WORKER_BINARY_NOT_FOUND", message });
  }
});
