#!/usr/bin/env bun
/**
 * Compiles the single rbee-hive binary per platform: dist/rbee-hive-<os>-<arch>.
 *   bun scripts/build.ts                    # all release targets
 *   bun scripts/build.ts --target linux-x64 # one (repeatable)
 *   bun scripts/build.ts --host             # the machine's own platform only
 * Runtime autoload of .env and bunfig.toml is off: a stray file in the working directory must not
 * change how the daemon behaves.
 */
import { parseArgs } from "node:util";
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import pkg from "../package.json" with { type: "json" };

export const TARGETS = ["linux-x64", "linux-x64-baseline", "linux-arm64", "darwin-arm64"] as const;
const DEFAULT_TARGETS = ["linux-x64", "linux-arm64", "darwin-arm64"];

const hostTarget = () => `${process.platform}-${process.arch}`;

const { values } = parseArgs({
  args: Bun.argv.slice(2),
  options: { target: { type: "string", multiple: true }, host: { type: "boolean" }, outdir: { type: "string" } },
});

const root = resolve(import.meta.dir, "..");
const outdir = resolve(values.outdir ?? join(root, "dist"));
const targets = values.host ? [hostTarget()] : (values.target ?? DEFAULT_TARGETS);
for (const target of targets) {
  if (!(TARGETS as readonly string[]).includes(target)) {
    console.error(`unknown target "${target}"; known: ${TARGETS.join(", ")}`);
    process.exit(2);
  }
}
mkdirSync(outdir, { recursive: true });

let failed = false;
for (const target of targets) {
  const outfile = join(outdir, `rbee-hive-${target}`);
  const started = performance.now();
  const result = await Bun.build({
    entrypoints: [join(root, "src/main.ts")],
    minify: true,
    sourcemap: "inline",
    bytecode: true,
    format: "esm",
    define: { "process.env.NODE_ENV": '"production"' },
    compile: {
      target: `bun-${target}` as Bun.Build.CompileTarget,
      outfile,
      autoloadDotenv: false,
      autoloadBunfig: false,
    },
  });
  if (!result.success) {
    failed = true;
    console.error(`build ${target} failed`);
    for (const log of result.logs) console.error(log);
    continue;
  }
  for (const log of result.logs) console.warn(log);
  console.log(`built ${outfile} (v${pkg.version}) in ${Math.round(performance.now() - started)} ms`);
}
process.exit(failed ? 1 : 0);
