/**
 * What every bench shares: figures, verdicts against targets, alternating run order, the JSON
 * report, exit codes and cleanup on any outcome (signals included).
 */
export const round = (x: number) => Math.round(x * 100) / 100;

/** median, p90 and min of a sample (nearest-rank). */
export function stats(xs: number[]) {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)] ?? NaN;
  return { median: round(at(0.5)), p90: round(at(0.9)), min: round(s[0] ?? NaN), n: s.length };
}

export const benchLog = (name: string) => (msg: string) => process.stderr.write(`[${name}] ${msg}\n`);

/**
 * A figure judged against its target. `ratio` = figure / target; an "at most" target passes at a
 * ratio ≤ 1, an "at least" target (e.g. a throughput ratio) at a ratio ≥ 1. A figure that is not
 * a finite number never passes.
 */
export function verdict(figure: number, target: number, kind: "at most" | "at least") {
  const ratio = figure / target;
  const pass = Number.isFinite(ratio) && (kind === "at most" ? ratio <= 1 : ratio >= 1);
  return { figure: round(figure), target, target_is: kind, ratio: Math.round(ratio * 1000) / 1000, pass };
}

/**
 * The order of the measurements in run `i`: rotated each run, so no side is always first (a
 * baseline that always runs first gets a colder or warmer machine than what it is compared to).
 */
export function rotation<T>(i: number, items: readonly T[]): T[] {
  const k = i % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

/** A precondition of the measurement did not hold: the run measured nothing and fails (exit 2). */
export class PreconditionFailed extends Error {
  override name = "PreconditionFailed";
}

export function precondition(ok: unknown, what: string): asserts ok {
  if (!ok) throw new PreconditionFailed(what);
}

/**
 * Run a bench body that returns its JSON report: prints it, then exits 0 (pass), 1 (a target
 * missed) or 2 (error or failed precondition), always after `cleanup`. SIGINT/SIGTERM also run
 * `cleanup` (then exit 130), so an interrupted bench leaves no process or file behind.
 */
export async function runBench(
  name: string,
  body: () => Promise<{ pass: boolean } & Record<string, unknown>>,
  cleanup: () => Promise<void>,
): Promise<never> {
  let cleaned: Promise<void> | undefined;
  const cleanOnce = () =>
    (cleaned ??= cleanup().catch((e) => {
      benchLog(name)(`cleanup failed: ${String(e)}`);
    }));
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.on(sig, () => {
      benchLog(name)(`${sig}: cleaning up`);
      void cleanOnce().finally(() => process.exit(130));
    });
  }
  let exitCode = 0;
  try {
    const result = await body();
    console.log(JSON.stringify(result, null, 2));
    exitCode = result.pass ? 0 : 1;
  } catch (e) {
    benchLog(name)(`FAILED: ${e instanceof Error ? e.stack : String(e)}`);
    console.log(JSON.stringify({ bench: name, error: String(e), pass: false }));
    exitCode = 2;
  } finally {
    await cleanOnce();
  }
  process.exit(exitCode);
}

/**
 * One line of the runner's table (bench/run.ts): a figure beside its baseline from the same run,
 * their ratio, and the target it is judged against (`target: null` = reported, not judged). A bench
 * puts these in `rows` of its JSON report; for benches without `rows` the runner reads every
 * nested `verdict`.
 */
export interface Row {
  name: string;
  figure: number | string | null;
  baseline?: number | string | null;
  unit?: string;
  /** figure / baseline, or for a verdict figure / target. */
  ratio?: number | null;
  /** e.g. "≥ 0.8× bare", "≤ 50 ms"; null: reported only. */
  target: string | null;
  /** null: not judged (reported), or not measured (see note). */
  pass: boolean | null;
  note?: string;
}

export const ratio3 = (a: number, b: number) => Math.round((a / b) * 1000) / 1000;

/** A child's stdout, line by line (without the newline), until it closes. */
export async function* stdoutLines(proc: Bun.Subprocess): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buf = "";
  for await (const chunk of proc.stdout as unknown as AsyncIterable<Uint8Array>) {
    buf += decoder.decode(chunk, { stream: true });
    for (let nl = buf.indexOf("\n"); nl >= 0; nl = buf.indexOf("\n")) {
      yield buf.slice(0, nl);
      buf = buf.slice(nl + 1);
    }
  }
}
