import { describe, expect, test } from "bun:test";
import { parseCli } from "../src/cli.ts";
import { MAIN } from "./helpers.ts";

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
    expect(parseCli(["--version"]).kind).toBe("version");
    expect(parseCli(["daemon", "--help"]).kind).toBe("help");
  });

  for (const sub of ["models", "worker", "status", "detect"]) {
    test(`removed subcommand "${sub}" exits 2 pointing at the HTTP API`, () => {
      const cmd = parseCli([sub, "list"]);
      expect(cmd.kind).toBe("error");
      if (cmd.kind !== "error") return;
      expect(cmd.exitCode).toBe(2);
      expect(cmd.message).toContain("daemon-only");
      expect(cmd.message).toMatch(/\/v1\//);
    });
  }

  test("unknown commands and options exit 2", () => {
    for (const argv of [["frobnicate"], ["--verbose"], ["--addr"], ["--port", "70000"], ["--log-format", "xml"]]) {
      const cmd = parseCli(argv);
      expect(cmd.kind).toBe("error");
      if (cmd.kind === "error") expect(cmd.exitCode).toBe(2);
    }
  });
});

describe("rbee-hive process", () => {
  test("removed subcommand: exit status 2 and a one-line message", async () => {
    const proc = Bun.spawn([process.execPath, MAIN, "worker", "spawn"], { stdout: "pipe", stderr: "pipe" });
    expect(await proc.exited).toBe(2);
    const stderr = await new Response(proc.stderr).text();
    expect(stderr.trim().split("\n")).toHaveLength(1);
    expect(stderr).toContain("POST /v1/workers/spawn");
  });

  test("--version prints the version", async () => {
    const proc = Bun.spawn([process.execPath, MAIN, "daemon", "--version"], { stdout: "pipe" });
    expect(await proc.exited).toBe(0);
    expect(await new Response(proc.stdout).text()).toMatch(/^rbee-hive \d+\.\d+\.\d+/);
  });
});
