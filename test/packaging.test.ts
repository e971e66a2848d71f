/**
 * The release build and the systemd unit: scripts/build.ts makes every target and a SHA256SUMS
 * that matches them, and smoke-tests the binaries that run here (--version, start, /v1/health,
 * SIGTERM → exit 0); packaging/rbee-hive.service passes `systemd-analyze verify` without a
 * warning, alone and with the keep-workers drop-in, and the README's security rating is the real one.
 * (test/install.test.ts holds install.sh's copies of the unit and drop-in to these files.)
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, closeSync, cpSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "./helpers.ts";
import { REPO } from "./fixtures/install-host.ts";
import { TARGETS, versionLine, whyNotRunnable } from "../scripts/build.ts";

const UNIT = readFileSync(join(REPO, "packaging/rbee-hive.service"), "utf8");
const DROPIN = readFileSync(join(REPO, "packaging/keep-workers.conf"), "utf8");

describe("release build", () => {
  let files: ReturnType<typeof tempDir>;
  let build: { exitCode: number; stdout: string; stderr: string };
  let commit: RegExp;

  beforeAll(async () => {
    files = tempDir("rbee-build-test-");
    const head = Bun.spawnSync(["git", "-C", REPO, "rev-parse", "--short", "HEAD"]).stdout.toString().trim();
    commit = new RegExp(`^${head}(-dirty)?$`);
    // Every target: the cross-compiled ones fetch their Bun runtime from the npm registry once.
    const proc = Bun.spawn([process.execPath, join(REPO, "scripts/build.ts"), "--outdir", files.path, "--startup-runs", "1"], {
      stdout: "pipe",
      stderr: "pipe",
    });
    build = { stdout: await new Response(proc.stdout).text(), stderr: await new Response(proc.stderr).text(), exitCode: await proc.exited };
  }, 240_000);

  afterAll(() => files?.cleanup());

  const out = (name: string) => join(files.path, name);

  test("every target and SHA256SUMS, nothing else (no source maps)", async () => {
    // Bun's progress while it fetches a cross-compile runtime (first build on a machine) is all stderr may hold.
    expect(build.stderr.split("\n").filter((l) => l.trim() && !/^(Downloading \[\d+\]|Decompressing\.\.\.)\s*$/.test(l))).toEqual([]);
    expect(build.exitCode).toBe(0);
    expect(readdirSync(files.path).sort()).toEqual(["SHA256SUMS", ...TARGETS.map((t) => `rbee-hive-${t}`)].sort());
    // sha256sum's own output over the targets, in the build's order, is the file.
    const names = TARGETS.map((t) => `rbee-hive-${t}`);
    const sums = Bun.spawnSync(["sha256sum", ...names], { cwd: files.path });
    expect(sums.exitCode).toBe(0);
    expect(readFileSync(out("SHA256SUMS"), "utf8")).toBe(sums.stdout.toString());
  });

  test("each binary is an executable for its target", () => {
    const header = (target: string) => {
      const bytes = new Uint8Array(20);
      const fd = openSync(out(`rbee-hive-${target}`), "r");
      readSync(fd, bytes, 0, 20, 0);
      closeSync(fd);
      return bytes;
    };
    const elfMachine = (h: Uint8Array) => ({ magic: [...h.subarray(0, 4)], class64: h[4], machine: h[18]! | (h[19]! << 8) });
    const ELF = [0x7f, 0x45, 0x4c, 0x46];
    expect(elfMachine(header("linux-x64"))).toEqual({ magic: ELF, class64: 2, machine: 62 }); // EM_X86_64
    expect(elfMachine(header("linux-x64-baseline"))).toEqual({ magic: ELF, class64: 2, machine: 62 });
    expect(elfMachine(header("linux-arm64"))).toEqual({ magic: ELF, class64: 2, machine: 183 }); // EM_AARCH64
    const macho = new DataView(header("darwin-arm64").buffer);
    expect({ magic: macho.getUint32(0, true), cpu: macho.getUint32(4, true) }).toEqual({ magic: 0xfeedfacf, cpu: 0x0100000c }); // MH_MAGIC_64, CPU_TYPE_ARM64
  });

  test("the binaries that run here passed the script's smoke test and print version, commit and target", () => {
    const runnable = TARGETS.filter((t) => whyNotRunnable(t) === null);
    // On the x64 CI and development machines both x64 builds run; elsewhere at least the host's own.
    expect(runnable.length).toBeGreaterThan(0);
    const smokeLines = build.stdout.split("\n").filter((l) => l.startsWith("smoke "));
    expect(smokeLines.map((l) => l.replace(/ in \d+ ms,/, " in N ms,"))).toEqual(
      runnable.map((t) => `smoke ${t}: ok (--version, start → /v1/health in N ms, median of 1; SIGTERM → exit 0)`),
    );
    for (const target of runnable) {
      const version = Bun.spawnSync([out(`rbee-hive-${target}`), "--version"], { cwd: "/" });
      const line = version.stdout.toString();
      const printedCommit = /\(commit (\S+), /.exec(line)?.[1] ?? "";
      expect(printedCommit).toMatch(commit);
      expect(line).toBe(`${versionLine(printedCommit, target)}\n`);
    }
    for (const target of TARGETS.filter((t) => whyNotRunnable(t) !== null)) {
      expect(build.stdout).toContain(`not run here (${whyNotRunnable(target)})`);
    }
  });
});

const ANALYZE = Bun.which("systemd-analyze");
if (!ANALYZE) console.log("systemd-analyze checks skipped: systemd-analyze is not installed (Debian: apt-get install systemd; .ci/run installs it)");

describe.skipIf(!ANALYZE)("packaging/rbee-hive.service under systemd-analyze", () => {
  let files: ReturnType<typeof tempDir>;
  const unitDir = () => join(files.path, "etc/systemd/system");

  beforeAll(() => {
    // A root with the unit, an executable at its ExecStart path and systemd's own units (targets).
    files = tempDir("rbee-unit-test-");
    mkdirSync(unitDir(), { recursive: true });
    writeFileSync(join(unitDir(), "rbee-hive.service"), UNIT);
    mkdirSync(join(files.path, "usr/local/bin"), { recursive: true });
    writeFileSync(join(files.path, "usr/local/bin/rbee-hive"), "#!/bin/sh\n");
    chmodSync(join(files.path, "usr/local/bin/rbee-hive"), 0o755);
    const systemUnits = ["/usr/lib/systemd/system", "/lib/systemd/system"].find((d) => existsSync(join(d, "multi-user.target")))!;
    cpSync(systemUnits, join(files.path, "usr/lib/systemd/system"), { recursive: true, verbatimSymlinks: true });
  });

  afterAll(() => files?.cleanup());

  function analyze(...args: string[]) {
    const r = Bun.spawnSync([ANALYZE!, ...args, `--root=${files.path}`, "rbee-hive.service"]);
    return { code: r.exitCode, output: (r.stdout.toString() + r.stderr.toString()).trim() };
  }
  const verify = () => analyze("verify", "--man=no");

  test("verify: no error and no warning, alone and with the keep-workers drop-in", () => {
    expect(verify()).toEqual({ code: 0, output: "" });
    mkdirSync(join(unitDir(), "rbee-hive.service.d"));
    writeFileSync(join(unitDir(), "rbee-hive.service.d/keep-workers.conf"), DROPIN);
    try {
      expect(verify()).toEqual({ code: 0, output: "" });
    } finally {
      Bun.spawnSync(["rm", "-r", join(unitDir(), "rbee-hive.service.d")]);
    }
  });

  test("verify is not blind: a wrong value in a drop-in is reported", () => {
    mkdirSync(join(unitDir(), "rbee-hive.service.d"));
    writeFileSync(join(unitDir(), "rbee-hive.service.d/typo.conf"), "[Service]\nKillMode=proces\n");
    try {
      const { output } = verify();
      expect(output).toContain("typo.conf:2: Failed to parse kill mode specification, ignoring: proces");
    } finally {
      Bun.spawnSync(["rm", "-r", join(unitDir(), "rbee-hive.service.d")]);
    }
  });

  test("the README states the unit's real `systemd-analyze security` rating", () => {
    const { output } = analyze("security", "--offline=yes");
    const rating = /Overall exposure level for rbee-hive\.service: (\d+\.\d) (\w+)/.exec(output);
    expect(rating).not.toBeNull();
    expect(readFileSync(join(REPO, "README.md"), "utf8")).toContain(`rates it **${rating![1]} ${rating![2]}**`);
  });
});

const SHELLCHECK = Bun.which("shellcheck");
if (!SHELLCHECK) console.log("shellcheck of install.sh skipped: shellcheck is not installed (Debian: apt-get install shellcheck; .ci/run installs it)");

test.skipIf(!SHELLCHECK)("install.sh is POSIX sh that shellcheck finds nothing in", () => {
  const r = Bun.spawnSync([SHELLCHECK!, "--shell=sh", "--severity=info", join(REPO, "packaging/install.sh")]);
  expect({ code: r.exitCode, output: r.stdout.toString() + r.stderr.toString() }).toEqual({ code: 0, output: "" });
});
