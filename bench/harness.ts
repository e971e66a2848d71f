/** What every bench shares: figures, the JSON report, exit codes and cleanup on any outcome. */
export const round = (x: number) => Math.round(x * 100) / 100;

/** median, p90 and min of a sample (nearest-rank). */
export function stats(xs: number[]) {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)] ?? NaN;
  return { median: round(at(0.5)), p90: round(at(0.9)), min: round(s[0] ?? NaN), n: s.length };
}

export const benchLog = (name: string) => (msg: string) => process.stderr.write(`[${name}] ${msg}\n`);

/**
 * Run a bench body that returns its JSON report: prints it, then exits 0 (pass), 1 (a target
 * missed) or 2 (error), always after `cleanup`.
 */
export async function runBench(
  name: string,
  body: () => Promise<{ pass: boolean } & Record<string, unknown>>,
  cleanup: () => Promise<void>,
): Promise<never> {
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
    await cleanup();
  }
  process.exit(exitCode);
}
