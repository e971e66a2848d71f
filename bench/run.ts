#!/usr/bin/env bun
/**
 * The bench runner: every benchmark in bench/ in one run, one table, bench/RESULTS.md.
 *
 *   bun run bench                 every bench, quick profile (fits 10 minutes on 2 cores)
 *   bun run bench http proxy      only those (by file name)
 *   bun run bench --full          each bench with its own defaults (longer, tighter figures)
 *   bun run bench --budget 900    total seconds (default 600); benches that would start past it are
 *                                 listed as not run
 *   bun run bench --no-write      print the table, leave bench/RESULTS.md alone
 *
 * A bench is a bench/*.ts file that calls `runBench("<name>", …)` (bench/harness.ts): it prints one
 * JSON object on stdout and exits 0 (targets met), 1 (a target missed) or 2 (it could not measure).
 * The runner runs them one after another (never two at once: they would measure each other), each
 * bounded by what is left of the budget, reads the last JSON object of its stdout, and takes its
 * `rows` (figure, baseline from the same run, ratio, target, pass), or for a bench without `rows`
 * one row per nested `verdict`. Raw reports go to bench/out/ (git-ignored).
 */
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import type { Row } from "./harness.ts";

const DIR = import.meta.dir;
const ROOT = join(DIR, "..");

/** Arguments and environment of each bench in the quick profile (the whole run ≲ 10 min on 2 cores). */
const QUICK: Record<string, { args?: string[]; env?: Record<string, string> }> = {
  lifecycle: { args: ["30"] },
  recovery: { args: ["20", "50", "8"] },
  download: { env: { BENCH_RUNS: "3" } },
  devices: { args: ["30", "10"] },
  restart: { args: ["7", "20"] },
  proxy: { args: ["3", "64", "128"], env: { BENCH_REQUESTS_PER_CLIENT: "2" } },
  http: { args: ["10", "1"] },
  binary: { args: ["5"] },
  sse: { args: ["500", "2"] },
  observability: { args: ["200"], env: { BENCH_SIZE: String(512 * 1024 * 1024) } },
};
/** Order: the quick ones first, so a budget that runs out cuts the long ones. */
const ORDER = ["http", "lifecycle", "devices", "sse", "observability", "recovery", "restart", "proxy", "binary", "download"];

interface Outcome {
  bench: string;
  exitCode: number | null;
  seconds: number;
  rows: Row[];
  error?: string;
  report?: Record<string, unknown>;
}

export function discover(): string[] {
  const names = readdirSync(DIR)
    .filter((f) => f.endsWith(".ts") && f !== "run.ts")
    .filter((f) => /\brunBench\(\s*["']/.test(readFileSync(join(DIR, f), "utf8")))
    .map((f) => f.slice(0, -3));
  const rank = (n: string) => (ORDER.includes(n) ? ORDER.indexOf(n) : ORDER.length);
  return names.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
}

/** The last top-level JSON object a bench printed (pretty-printed over many lines, or one line). */
export function lastJson(stdout: string): Record<string, unknown> | undefined {
  const starts = [...stdout.matchAll(/^\{/gm)].map((m) => m.index!);
  for (let i = starts.length - 1; i >= 0; i--) {
    try {
      return JSON.parse(stdout.slice(starts[i]).trim()) as Record<string, unknown>;
    } catch {
      // not a whole object from here: try an earlier start
    }
  }
  return undefined;
}

/**
 * Names and baselines of the verdicts of benches that print no `rows` (by the dotted path of the
 * object that holds the verdict). A verdict without an entry here gets its path as its name.
 */
type Report = any;
const LABELS: Record<string, { name: string; unit: string; baseline?: (r: Report) => string; missed?: (r: Report) => string }> = {
  "lifecycle.spawn_to_ready": { name: "spawn → ready event: overhead over the same worker started directly", unit: "ms", baseline: (r) => `direct ${r.spawn_to_ready.direct_to_healthy.median} ms, through the hive ${r.spawn_to_ready.hive.median} ms` },
  "lifecycle.spawn_preflight": { name: "spawn preflight (estimate + admission) on the spawn path, detection cached", unit: "ms" },
  "lifecycle.sigkill_to_exited": { name: "SIGKILL of a worker → its exited event", unit: "ms", baseline: (r) => `Bun's own exit notice ${r.sigkill_to_exited.direct_baseline.median} ms` },
  "devices.devices": { name: "GET /v1/devices (detection cached) minus GET /v1/health", unit: "ms", baseline: (r) => `health ${r.devices.health_baseline.median} ms` },
  "devices.preflight": { name: "spawn preflight with 50 workers placed: added per spawn", unit: "ms" },
  "observability.scrape": { name: "GET /metrics with 100 workers", unit: "ms", baseline: (r) => `GET /v1/health ${r.scrape.health_ms.median} ms` },
  "observability.heartbeat": { name: "queen heartbeat during a download: p99 deviation from the interval", unit: "ms", baseline: (r) => `idle: p99 ${r.heartbeat.deviation_ms.idle.p99} ms` },
  "recovery.restart.kill_to_idle": {
    name: "SIGKILL of a ready worker → idle again (restart policy)",
    unit: "ms",
    baseline: (r) => `direct kill + start ${r.restart.direct_kill_and_start_baseline.median} ms`,
    missed: (r) =>
      `the target is absolute and the worker's own start (a Bun process) took ${r.restart.direct_kill_and_start_baseline.median} ms in this run; what the hive adds: ${r.restart.overhead_median} ms (kill → exited ${r.restart.breakdown_median.kill_to_exited}, → spawned ${r.restart.breakdown_median.exited_to_spawned}, → ready ${r.restart.breakdown_median.spawned_to_ready} ms)`,
  },
  "recovery.monitor_cost": { name: "monitor CPU, idle workers checked every second", unit: "% of a core", baseline: (r) => `${r.monitor_cost.workers_per_daemon} workers: ${r.monitor_cost.with_monitor_pct_one_core} % with, ${r.monitor_cost.baseline_pct_one_core} % without` },
  "restart.verdicts.adopt_median_ms": {
    name: "upgrade with kept workers: new hive start → all adopted",
    unit: "ms",
    baseline: (r) => `empty hive ${r.empty_hive_ms.median} ms`,
    missed: (r) =>
      `the target is absolute, and the same daemon starting on an empty data dir (Bun's start, module load, the catalog, no worker) took ${r.empty_hive_ms.median} ms in this run; adopting 20 workers added ${Math.round((r.verdicts.adopt_median_ms.figure - r.empty_hive_ms.median) * 10) / 10} ms`,
  },
  "restart.verdicts.worker_restarts": { name: "worker restarts through the upgrades", unit: "" },
  "restart.verdicts.failed_requests": { name: "failed requests streaming from the workers through the upgrades", unit: "", baseline: (r) => `${r.client.requests_ok} requests ok` },
  "restart.verdicts.adopted_exit_median_ms": { name: "SIGKILL of an adopted worker → its exited event", unit: "ms" },
  "restart.verdicts.die_with_hive_p90_ms": { name: "SIGKILL of the hive → its workers and their children gone (p90)", unit: "ms" },
  "proxy.paced_fake_worker.verdicts.throughput_ratio": { name: "64 token streams through the hive: throughput vs straight from the worker", unit: "×", baseline: (r) => `${r.paced_fake_worker.hive_tokens_per_s.median} vs ${r.paced_fake_worker.direct_tokens_per_s.median} tokens/s` },
  "proxy.paced_fake_worker.verdicts.added_ttft_ms": { name: "64 token streams: added time to first token", unit: "ms", baseline: (r) => `direct ${r.paced_fake_worker.ttft_ms.direct.median} ms` },
};

/** Figures of a bench without `rows` that are reported, not judged: rows of their own. */
const REPORTED: Record<string, (r: Report) => Row[]> = {
  proxy: (r) => {
    const rows: Row[] = [];
    const p = r.paced_fake_worker;
    if (p?.hive_cpu) rows.push({ name: "64 paced token streams: the hive's CPU per streamed token", figure: p.hive_cpu.us_per_streamed_token, unit: "µs", target: null, pass: null });
    for (const [key, what] of [["unpaced_fake_worker", "the fake worker unpaced (CPU-bound: three processes on two cores)"], ["llama_server", "the real llama-server (--parallel 4)"]] as const) {
      const x = r[key];
      if (!x?.throughput_ratio) continue;
      rows.push({
        name: `64 token streams from ${what}: throughput through the hive vs straight`,
        figure: x.throughput_ratio.median,
        baseline: `${x.hive_tokens_per_s.median} vs ${x.direct_tokens_per_s.median} tokens/s`,
        unit: "×",
        target: null,
        pass: null,
        note: `time to first token +${x.ttft_ms.added_median} ms (${x.ttft_ms.hive.median} vs ${x.ttft_ms.direct.median} ms)${x.hive_cpu ? `; the hive's CPU per streamed token ${x.hive_cpu.us_per_streamed_token} µs` : ""}`,
      });
    }
    return rows;
  },
};

/** Rows for a report without `rows`: one per nested verdict ({figure, target, target_is, ratio, pass}). */
export function rowsFromVerdicts(bench: string, report: Record<string, unknown>): Row[] {
  const rows: Row[] = [];
  const walk = (v: unknown, path: string[]) => {
    if (!v || typeof v !== "object" || Array.isArray(v)) return;
    const o = v as Record<string, unknown>;
    if ("target_is" in o && "pass" in o && "figure" in o) {
      const verdict = o as { figure: number; target: number; target_is: string; ratio?: number; pass: boolean };
      const key = [bench, ...path.filter((p) => p !== "verdict")].join(".");
      const label = LABELS[key];
      let baseline: string | null = null;
      try {
        baseline = label?.baseline?.(report) ?? null;
      } catch {
        // a report without that field: no baseline shown
      }
      let note: string | undefined;
      try {
        note = !verdict.pass ? label?.missed?.(report) : undefined;
      } catch {
        // a report without those fields
      }
      rows.push({
        note,
        name: label?.name ?? path.filter((p) => p !== "verdict").join("."),
        figure: verdict.figure,
        baseline,
        unit: label?.unit,
        ratio: null,
        target: `${verdict.target_is === "at most" ? "≤" : "≥"} ${verdict.target}${label?.unit && label.unit !== "×" ? ` ${label.unit}` : ""}`,
        pass: verdict.pass,
      });
      return;
    }
    for (const [k, child] of Object.entries(o)) walk(child, [...path, k]);
  };
  walk(report, []);
  try {
    rows.push(...(REPORTED[bench]?.(report) ?? []));
  } catch {
    // a report without those fields: nothing more to show
  }
  return rows;
}

async function runOne(bench: string, profile: "quick" | "full", budgetS: number): Promise<Outcome> {
  const quick = profile === "quick" ? QUICK[bench] : undefined;
  const t0 = performance.now();
  const proc = Bun.spawn([process.execPath, join(DIR, `${bench}.ts`), ...(quick?.args ?? [])], {
    cwd: ROOT,
    env: { ...process.env, ...quick?.env },
    stdout: "pipe",
    stderr: "inherit",
    stdin: "ignore",
  });
  // Over its share of the budget: SIGTERM (the harness cleans up), then SIGKILL.
  let overran = false;
  const timer = setTimeout(() => {
    overran = true;
    proc.kill("SIGTERM");
    setTimeout(() => proc.kill("SIGKILL"), 15_000).unref();
  }, budgetS * 1000);
  const stdout = await new Response(proc.stdout).text();
  const exitCode = await proc.exited;
  clearTimeout(timer);
  const seconds = Math.round((performance.now() - t0) / 100) / 10;
  const report = lastJson(stdout);
  if (overran) return { bench, exitCode, seconds, rows: [], error: `stopped after ${budgetS} s: over the time budget`, report };
  if (!report) return { bench, exitCode, seconds, rows: [], error: `no JSON report on stdout (exit ${exitCode})` };
  const rows = Array.isArray(report.rows) ? (report.rows as Row[]) : rowsFromVerdicts(bench, report);
  const error = exitCode === 2 || typeof report.error === "string" ? String(report.error ?? `exit ${exitCode}`) : undefined;
  return { bench, exitCode, seconds, rows, error, report };
}

function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return "";
  }
}

export function machine() {
  const cpuModel = cpus()[0]?.model ?? "unknown CPU";
  return {
    cpu: cpuModel.replace(/\s+/g, " "),
    cores: cpus().length,
    ram_gib: Math.round((totalmem() / 1024 ** 3) * 10) / 10,
    kernel: sh("uname", ["-sr"]),
    bun: Bun.version,
    commit: sh("git", ["-C", ROOT, "describe", "--always", "--dirty"]) || "unknown",
    date: new Date().toISOString().replace(/\.\d+Z$/, "Z"),
  };
}

const fmt = (v: unknown) => (v === null || v === undefined ? "—" : typeof v === "number" ? String(Math.round(v * 1000) / 1000) : String(v));
const verdictOf = (r: Row) =>
  r.pass === true ? "pass" : r.pass === false ? "MISS" : r.note?.startsWith("not measured") ? "not measured" : "reported";

export function table(outcomes: Outcome[]): string[][] {
  const lines: string[][] = [];
  for (const o of outcomes) {
    if (o.error && o.rows.length === 0) lines.push([o.bench, "(did not measure)", "—", "—", "—", "—", `ERROR: ${o.error}`]);
    for (const r of o.rows) {
      const withUnit = (v: unknown) => (typeof v === "number" && r.unit ? `${fmt(v)} ${r.unit}` : fmt(v));
      lines.push([o.bench, r.name, withUnit(r.figure), withUnit(r.baseline), fmt(r.ratio), r.target ?? "—", verdictOf(r)]);
    }
    if (o.error && o.rows.length > 0) lines.push([o.bench, "(run)", "—", "—", "—", "—", `ERROR: ${o.error}`]);
  }
  return lines;
}

const HEADER = ["bench", "figure", "value", "baseline (same run)", "ratio", "target", "result"];

function printTable(lines: string[][]): void {
  const widths = HEADER.map((h, i) => Math.min(60, Math.max(h.length, ...lines.map((l) => l[i]!.length))));
  const row = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ");
  console.log(row(HEADER));
  console.log(widths.map((w) => "-".repeat(w)).join("  "));
  for (const l of lines) console.log(row(l));
}

function markdown(outcomes: Outcome[], m: ReturnType<typeof machine>, profile: string, totalS: number, notRun: string[]): string {
  const esc = (s: string) => s.replace(/\|/g, "\\|");
  const out: string[] = [
    "# Benchmark results",
    "",
    "Written by `bun run bench` (bench/run.ts); do not edit by hand. Every ratio compares two figures",
    "measured in this same run, interleaved (see bench/README.md); absolute numbers depend on the",
    "machine and its load, ratios much less.",
    "",
    `- machine: ${m.cpu}, ${m.cores} cores, ${m.ram_gib} GiB RAM, ${m.kernel}`,
    `- Bun ${m.bun}, commit ${m.commit}, ${m.date}`,
    `- profile: ${profile}, total ${Math.round(totalS)} s`,
    "",
    `| ${HEADER.join(" | ")} |`,
    `|${HEADER.map(() => "---").join("|")}|`,
    ...table(outcomes).map((l) => `| ${l.map(esc).join(" | ")} |`),
    "",
  ];
  const line = (o: Outcome, r: Row) => `- **${o.bench}**, ${esc(r.name)}: ${r.note}`;
  const misses = outcomes.flatMap((o) => o.rows.filter((r) => r.note && (r.pass === false || r.note.startsWith("not measured"))).map((r) => line(o, r)));
  const notes = outcomes.flatMap((o) => o.rows.filter((r) => r.note && !(r.pass === false || r.note.startsWith("not measured"))).map((r) => line(o, r)));
  if (misses.length) out.push("## Misses and what was not measured, with the reason", "", ...misses, "");
  if (notes.length) out.push("## Notes", "", ...notes, "");
  out.push("## Runs", "", "| bench | exit | seconds |", "|---|---|---|", ...outcomes.map((o) => `| ${o.bench} | ${o.exitCode} | ${o.seconds} |`));
  if (notRun.length) out.push("", `Not run (time budget): ${notRun.join(", ")}.`);
  return out.join("\n") + "\n";
}

async function main(argv: string[]): Promise<number> {
  let profile: "quick" | "full" = "quick";
  let budgetS = 600;
  let write = true;
  const names: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--full") profile = "full";
    else if (a === "--quick") profile = "quick";
    else if (a === "--no-write") write = false;
    else if (a === "--budget") budgetS = Number(argv[++i]);
    else names.push(a);
  }
  const all = discover();
  const unknown = names.filter((n) => !all.includes(n));
  if (unknown.length) {
    console.error(`unknown bench: ${unknown.join(", ")} (there are: ${all.join(", ")})`);
    return 2;
  }
  const selected = names.length ? all.filter((n) => names.includes(n)) : all;
  const t0 = performance.now();
  const outcomes: Outcome[] = [];
  const notRun: string[] = [];
  for (const bench of selected) {
    const left = budgetS - (performance.now() - t0) / 1000;
    if (left < 10) {
      notRun.push(bench);
      continue;
    }
    process.stderr.write(`\n== ${bench} (${profile}; ${Math.round(left)} s of the budget left)\n`);
    const o = await runOne(bench, profile, left);
    outcomes.push(o);
    process.stderr.write(`== ${bench}: exit ${o.exitCode} in ${o.seconds} s${o.error ? ` (${o.error})` : ""}\n`);
  }
  const totalS = (performance.now() - t0) / 1000;
  const m = machine();
  console.log(`\n${m.cpu}, ${m.cores} cores, ${m.ram_gib} GiB, ${m.kernel}, Bun ${m.bun}, ${profile} profile, ${Math.round(totalS)} s\n`);
  printTable(table(outcomes));
  if (notRun.length) console.log(`\nnot run (time budget): ${notRun.join(", ")}`);
  mkdirSync(join(DIR, "out"), { recursive: true });
  writeFileSync(join(DIR, "out", "last-run.json"), JSON.stringify({ machine: m, profile, seconds: totalS, outcomes }, null, 2));
  // A partial run (named benches) never overwrites the whole table.
  if (write && names.length === 0) {
    writeFileSync(join(DIR, "RESULTS.md"), markdown(outcomes, m, profile, totalS, notRun));
    console.log("\nwrote bench/RESULTS.md");
  }
  const errored = outcomes.some((o) => o.error);
  const missed = outcomes.some((o) => o.rows.some((r) => r.pass === false));
  return errored || notRun.length ? 2 : missed ? 1 : 0;
}

if (import.meta.main) process.exit(await main(process.argv.slice(2)));
