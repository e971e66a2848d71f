#!/usr/bin/env bun
/**
 * Release build: one standalone rbee-hive binary per target in dist/, dist/SHA256SUMS over them,
 * and a smoke test of every binary that runs on this machine.
 *   bun scripts/build.ts                     # every release target
 *   bun scripts/build.ts --target linux-x64  # one (repeatable); --host: this machine's own
 *   options: --outdir DIR (default dist/), --sourcemap (also write <binary>.map; none by default),
 *            --commit REV (when there is no git checkout), --skip-smoke, --startup-runs N (default 5)
 * Binaries are minified and carry bytecode (parsed ahead of time; checked to start and serve). The
 * version line embeds the git commit and the target: `rbee-hive 0.1.0 (commit abc1234, linux-x64)`.
 * Runtime autoload of .env and bunfig.toml is off: a stray file in the working directory must not
 * change how the daemon behaves.
 * Smoke test, from `/`: `--version` prints the exact line; start → `/v1/health` answers (timed,
 * median of --startup-runs starts); SIGTERM → exit 0. Exit status: 0 all good, 1 a build or smoke
 * test failed, 2 bad arguments.
 */
import { parseArgs } from "node:util";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import pkg from "../package.json" with { type: "json" };

export const TARGETS = ["linux-x64", "linux-x64-baseline", "linux-arm64", "darwin-arm64"] as const;
export type Target = (typeof TARGETS)[number];

/** Hang guard for SIGTERM → exit; the hive's own bound is shutdown.total_timeout_s (30 s). */
const EXIT_GUARD_MS = 45_000;
/** Hang guard for start → health. */
const START_GUARD_MS = 20_000;

/** The release target this machine is, if it is one (linux-x64 needs AVX2; baseline does not). */
export function hostTarget(): Target | null {
  const name = `${process.platform}-${process.arch}`;
  if (name === "linux-x64") return hasAvx2() ? "linux-x64" : "linux-x64-baseline";
  return (TARGETS as readonly string[]).includes(name) ? (name as Target) : null;
}

function hasAvx2(): boolean {
  try {
    return /^flags\s*:.*\bavx2\b/m.test(readFileSync("/proc/cpuinfo", "utf8"));
  } catch {
    return false;
  }
}

/** Why a target's binary cannot run here, or null when it can. */
export function whyNotRunnable(target: Target): string | null {
  const platform = `${process.platform}-${process.arch}`;
  const [os, arch] = target.split("-") as [string, string];
  if (`${os}-${arch}` !== platform) return `a ${os}-${arch} binary; this is ${platform}`;
  if (target === "linux-x64" && !hasAvx2()) return "needs AVX2, this CPU lacks it";
  return null;
}

/** Short commit of the checkout, "-dirty" when tracked files differ from it; "unknown" without git. */
function gitCommit(root: string): string {
  const rev = Bun.spawnSync(["git", "-C", root, "rev-parse", "--short", "HEAD"], { stderr: "ignore" });
  if (rev.exitCode !== 0) return "unknown";
  const status = Bun.spawnSync(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"], { stderr: "ignore" });
  const dirty = status.exitCode === 0 && status.stdout.toString().trim() !== "";
  return rev.stdout.toString().trim() + (dirty ? "-dirty" : "");
}

import { versionLine } from "../src/version.ts";
export { versionLine };

async function sha256File(path: string): Promise<string> {
  const hasher = new Bun.CryptoHasher("sha256");
  for await (const chunk of Bun.file(path).stream()) hasher.update(chunk);
  return hasher.digest("hex");
}

/** `sha256sum` format over every release binary in `outdir`, so `sha256sum -c SHA256SUMS` checks them all. */
async function writeSha256Sums(outdir: string): Promise<string[]> {
  const names = TARGETS.map((t) => `rbee-hive-${t}`).filter((name) => existsSync(join(outdir, name)));
  const lines: string[] = [];
  for (const name of names) lines.push(`${await sha256File(join(outdir, name))}  ${name}\n`);
  const tmp = join(outdir, ".SHA256SUMS.tmp");
  writeFileSync(tmp, lines.join(""));
  renameSync(tmp, join(outdir, "SHA256SUMS"));
  return names;
}

async function buildTarget(root: string, target: Target, outfile: string, commit: string, sourcemap: boolean): Promise<boolean> {
  const result = await Bun.build({
    entrypoints: [join(root, "src/main.ts")],
    minify: true,
    // Bytecode: JavaScriptCore skips parsing at start. Checked by the smoke test on each run here.
    bytecode: true,
    format: "esm",
    sourcemap: sourcemap ? "external" : "none",
    define: {
      "process.env.NODE_ENV": '"production"',
      RBEE_BUILD_COMMIT: JSON.stringify(commit),
      RBEE_BUILD_TARGET: JSON.stringify(target),
    },
    compile: {
      target: `bun-${target}` as Bun.Build.CompileTarget,
      outfile,
      autoloadDotenv: false,
      autoloadBunfig: false,
    },
  });
  for (const log of result.logs) console.warn(String(log));
  if (!result.success) console.error(`build ${target}: FAILED`);
  return result.success;
}

function freePort(): number {
  const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = probe.port;
  probe.stop(true);
  return port;
}

interface StartResult {
  startupMs: number;
  exitCode: number | "no exit";
}

/** Start the binary from `/` on a free loopback port, time start → /v1/health, then SIGTERM it. */
async function startOnce(bin: string): Promise<StartResult> {
  const dataDir = mkdtempSync(join(tmpdir(), "rbee-build-smoke-"));
  const port = freePort();
  const started = performance.now();
  const proc = Bun.spawn([bin, "daemon", "--addr", `127.0.0.1:${port}`, "--log-format", "json"], {
    cwd: "/",
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dataDir, RBEE_DATA_DIR: dataDir, RBEE_LOG: "warn" },
    stdin: "ignore",
    stdout: "ignore",
    stderr: "pipe",
  });
  try {
    let startupMs = -1;
    while (startupMs < 0 && proc.exitCode === null && performance.now() - started < START_GUARD_MS) {
      const body: any = await fetch(`http://127.0.0.1:${port}/v1/health`, { signal: AbortSignal.timeout(1000) })
        .then((r) => (r.ok ? r.json() : null))
        .catch(() => null);
      if (body?.status === "alive" && body.version === pkg.version) startupMs = performance.now() - started;
      else await Bun.sleep(5);
    }
    if (startupMs < 0) {
      proc.kill("SIGKILL");
      const stderr = (await new Response(proc.stderr).text()).trim();
      throw new Error(`/v1/health did not answer within ${START_GUARD_MS / 1000} s (exit ${await proc.exited}): ${stderr}`);
    }
    proc.kill("SIGTERM");
    const exitCode = await Promise.race([proc.exited, Bun.sleep(EXIT_GUARD_MS).then(() => "no exit" as const)]);
    return { startupMs, exitCode };
  } finally {
    proc.kill("SIGKILL");
    await proc.exited;
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** The smoke test of one binary; returns the median start-up time in ms, throws with the reason. */
async function smoke(bin: string, expectedVersion: string, runs: number): Promise<number> {
  const version = Bun.spawnSync([bin, "--version"], { cwd: "/", env: { PATH: process.env.PATH ?? "" } });
  const printed = version.stdout.toString();
  if (version.exitCode !== 0 || printed !== `${expectedVersion}\n`) {
    throw new Error(`--version: exit ${version.exitCode}, printed ${JSON.stringify(printed)}; expected ${JSON.stringify(expectedVersion)}`);
  }
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const { startupMs, exitCode } = await startOnce(bin);
    if (exitCode !== 0) throw new Error(`SIGTERM → exit ${exitCode}, expected 0`);
    times.push(startupMs);
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

async function main(): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: Bun.argv.slice(2),
      options: {
        target: { type: "string", multiple: true },
        host: { type: "boolean" },
        outdir: { type: "string" },
        sourcemap: { type: "boolean" },
        commit: { type: "string" },
        "skip-smoke": { type: "boolean" },
        "startup-runs": { type: "string" },
      },
    }));
  } catch (e) {
    console.error(`build: ${(e as Error).message}`);
    return 2;
  }
  const root = resolve(import.meta.dir, "..");
  const outdir = resolve(values.outdir ?? join(root, "dist"));
  const runs = Number(values["startup-runs"] ?? 5);
  if (!Number.isInteger(runs) || runs < 1) {
    console.error(`build: --startup-runs must be a positive integer, got "${values["startup-runs"]}"`);
    return 2;
  }
  let targets: string[];
  if (values.host) {
    const host = hostTarget();
    if (!host) {
      console.error(`build: ${process.platform}-${process.arch} is not a release target (${TARGETS.join(", ")})`);
      return 2;
    }
    targets = [host];
  } else targets = values.target ?? [...TARGETS];
  for (const target of targets) {
    if (!(TARGETS as readonly string[]).includes(target)) {
      console.error(`build: unknown target "${target}"; known: ${TARGETS.join(", ")}`);
      return 2;
    }
  }
  const commit = values.commit ?? gitCommit(root);
  mkdirSync(outdir, { recursive: true });

  let failed = false;
  const rows: string[] = [];
  for (const target of targets as Target[]) {
    const outfile = join(outdir, `rbee-hive-${target}`);
    // A map from an earlier --sourcemap build must not ship beside a binary built without one.
    rmSync(`${outfile}.map`, { force: true });
    const started = performance.now();
    if (!(await buildTarget(root, target, outfile, commit, values.sourcemap === true))) {
      failed = true;
      rows.push(`${target.padEnd(20)} build FAILED`);
      continue;
    }
    const size = statSync(outfile).size;
    console.log(`built ${outfile} in ${Math.round(performance.now() - started)} ms`);
    const notHere = whyNotRunnable(target);
    let startup: string;
    if (notHere) startup = `not run here (${notHere})`;
    else if (values["skip-smoke"]) startup = "smoke test skipped";
    else {
      try {
        const median = await smoke(outfile, versionLine(commit, target), runs);
        startup = `${Math.round(median)} ms`;
        console.log(`smoke ${target}: ok (--version, start → /v1/health in ${Math.round(median)} ms, median of ${runs}; SIGTERM → exit 0)`);
      } catch (e) {
        failed = true;
        startup = "smoke test FAILED";
        console.error(`smoke ${target}: FAILED: ${(e as Error).message}`);
      }
    }
    rows.push(`${target.padEnd(20)} ${mib(size).padStart(10)}  ${startup}`);
  }
  const listed = await writeSha256Sums(outdir);
  console.log(`\n${versionLine(commit, "<target>")} → ${outdir}`);
  console.log(`${"target".padEnd(20)} ${"size".padStart(10)}  start → /v1/health`);
  for (const row of rows) console.log(row);
  console.log(`SHA256SUMS: ${listed.join(", ")}`);
  return failed ? 1 : 0;
}

if (import.meta.main) process.exit(await main());
