import { describe, expect, test } from "bun:test";
import { parseCli } from "../src/cli.ts";
import { VERSION } from "../src/version.ts";
import { exitWithin, MAIN } from "./helpers.ts";

describe("parseCli", () => {
  test("bare command runs the daemon with defaults", () => {
    expect(parseCli([])).toEqual({ kind: "run", flags: {} });
  });

  test("a leading daemon word is accepted (queen-rbee starts `rbee-hive daemon --addr …`)", () => {
    expect(parseCli(["daemon", "--addr", "0.0.0.0:8080"])).toEqual({ kind: "run", flags: { addr: "0.0.0.0:8080" } });
  });

  test("all daemon flags, with = and space forms", () => {
    const cmd = parseCli(["--port=9300", "--config", "/etc/rbee/hive.toml", "--data-dir", "/d", "--models-dir=/m", "--log-format", "json"]);
    expect(cmd).toEqual({
      kind: "run",
      flags: { port: 9300, config: "/etc/rbee/hive.toml", dataDir: "/d", modelsDir: "/m", logFormat: "json" },
    });
  });

  test("--version and --help", () => {
    expect(parseCli(["--version"])).toEqual({ kind: "version" });
    expect(parseCli(["daemon", "--help"])).toEqual({ kind: "help" });
  });

  const removed: Record<string, string> = {
    models: "use GET /v1/models and POST /v1/models/download",
    worker: "use POST /v1/workers/spawn, GET /v1/workers/list and POST /v1/workers/stop",
    status: "use GET /v1/health and GET /v1/workers/list",
    detect: "use GET /v1/devices",
  };
  for (const [sub, route] of Object.entries(removed)) {
    test(`removed subcommand "${sub}" exits 2 pointing at the HTTP API`, () => {
      expect(parseCli([sub, "list"])).toEqual({
        kind: "error",
        exitCode: 2,
        message: `rbee-hive: the "${sub}" command was removed; the hive is daemon-only: ${route}`,
      });
    });
  }

  test("unknown commands and options exit 2 with a message naming them", () => {
    const cases: Array<[string[], string]> = [
      [["frobnicate"], 'rbee-hive: unknown command "frobnicate"; the hive is daemon-only and driven over its HTTP API (see --help)'],
      [["--verbose"], 'rbee-hive: unknown option "--verbose"; the hive is daemon-only and driven over its HTTP API (see --help)'],
      [["--addr"], "rbee-hive: --addr needs a value (see --help)"],
      [["--port", "70000"], 'rbee-hive: --port must be 1..65535, got "70000"'],
      [["--log-format", "xml"], 'rbee-hive: --log-format must be pretty or json, got "xml"'],
    ];
    for (const [argv, message] of cases) expect(parseCli(argv)).toEqual({ kind: "error", exitCode: 2, message });
  });
});

describe("rbee-hive process", () => {
  test("removed subcommand: exit status 2 and a one-line message", async () => {
    const proc = Bun.spawn([process.execPath, MAIN, "worker", "spawn"], { stdout: "pipe", stderr: "pipe" });
    expect(await exitWithin(proc, 10_000, "rbee-hive worker spawn")).toBe(2);
    expect(await new Response(proc.stderr).text()).toBe(
      'rbee-hive: the "worker" command was removed; the hive is daemon-only: use POST /v1/workers/spawn, GET /v1/workers/list and POST /v1/workers/stop\n',
    );
    expect(await new Response(proc.stdout).text()).toBe("");
  });

  test("--version prints the version, the commit (dev from source) and the target", async () => {
    const proc = Bun.spawn([process.execPath, MAIN, "daemon", "--version"], { stdout: "pipe" });
    expect(await exitWithin(proc, 10_000, "rbee-hive --version")).toBe(0);
    expect(await new Response(proc.stdout).text()).toBe(`rbee-hive ${VERSION} (commit dev, ${process.platform}-${process.arch})\n`);
  });
});
