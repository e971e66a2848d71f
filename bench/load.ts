/**
 * A closed-loop HTTP load generator for the throughput benches (not a bench itself): `wrk` when it
 * is installed (C, one thread: it leaves the CPU to the server being measured), else a Bun child
 * process with keep-alive fetch loops. Both count only 2xx answers; anything else is reported so a
 * bench can refuse a run that measured errors.
 *
 * Child mode: bun bench/load.ts --child <url> <seconds> <connections> [header: value]…
 */
import { execFileSync } from "node:child_process";

export interface LoadResult {
  /** 2xx answers per second over the window. */
  rps: number;
  requests: number;
  errors: number;
  seconds: number;
  tool: "wrk" | "bun";
}

let wrkPath: string | null | undefined;
let tasksetPath: string | null | undefined;

/**
 * `argv` run on one CPU with `taskset` (util-linux) when a CPU is given and taskset exists. On a
 * 2-core machine the load generator on one core and the server under test on the other stop
 * competing for a core, which otherwise makes every window a different contest.
 */
export function pinned(argv: string[], cpu: number | undefined): string[] {
  if (cpu === undefined) return argv;
  if (tasksetPath === undefined) {
    try {
      tasksetPath = execFileSync("sh", ["-c", "command -v taskset"], { encoding: "utf8" }).trim() || null;
    } catch {
      tasksetPath = null;
    }
  }
  return tasksetPath ? [tasksetPath, "-c", String(cpu), ...argv] : argv;
}

/** The `wrk` binary, or null when it is not installed (`apt-get install wrk`). */
export function findWrk(): string | null {
  if (wrkPath !== undefined) return wrkPath;
  try {
    wrkPath = execFileSync("sh", ["-c", "command -v wrk"], { encoding: "utf8" }).trim() || null;
  } catch {
    wrkPath = null;
  }
  return wrkPath;
}

/** Drive `url` with `connections` keep-alive connections for `seconds`. */
export async function load(
  url: string,
  opts: { seconds: number; connections: number; headers?: Record<string, string>; /** pin the generator to this CPU (see pinned) */ cpu?: number },
): Promise<LoadResult> {
  const headers = Object.entries(opts.headers ?? {});
  const wrk = findWrk();
  if (wrk) {
    const args = ["-t1", `-c${opts.connections}`, `-d${opts.seconds}s`, ...headers.flatMap(([k, v]) => ["-H", `${k}: ${v}`]), url];
    const proc = Bun.spawn(pinned([wrk, ...args], opts.cpu), { stdout: "pipe", stderr: "pipe" });
    const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
    if (code !== 0) throw new Error(`wrk exited ${code}: ${err}`);
    const requests = Number(/(\d+) requests in ([\d.]+)(ms|s|m)/.exec(out)?.[1] ?? NaN);
    const m = /requests in ([\d.]+)(ms|s|m)/.exec(out);
    const seconds = m ? Number(m[1]) * (m[2] === "ms" ? 0.001 : m[2] === "m" ? 60 : 1) : NaN;
    const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
    const socketErrors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
    const errors = non2xx + (socketErrors ? socketErrors.slice(1).reduce((a, b) => a + Number(b), 0) : 0);
    const ok = requests - non2xx;
    return { rps: ok / seconds, requests: ok, errors, seconds, tool: "wrk" };
  }
  const proc = Bun.spawn(pinned([process.execPath, import.meta.path, "--child", url, String(opts.seconds), String(opts.connections), ...headers.map(([k, v]) => `${k}: ${v}`)], opts.cpu), {
    stdout: "pipe",
    stderr: "inherit",
  });
  const [out, code] = await Promise.all([new Response(proc.stdout).text(), proc.exited]);
  if (code !== 0) throw new Error(`load child exited ${code}`);
  return { ...(JSON.parse(out) as Omit<LoadResult, "tool">), tool: "bun" };
}

async function child(url: string, seconds: number, connections: number, headerArgs: string[]): Promise<void> {
  const headers: Record<string, string> = {};
  for (const h of headerArgs) headers[h.slice(0, h.indexOf(":"))] = h.slice(h.indexOf(":") + 1).trim();
  let requests = 0;
  let errors = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  const loop = async () => {
    while (performance.now() < end) {
      try {
        const res = await fetch(url, { headers });
        await res.arrayBuffer();
        if (res.status >= 200 && res.status < 300) requests++;
        else errors++;
      } catch {
        errors++;
      }
    }
  };
  await Promise.all(Array.from({ length: connections }, loop));
  const elapsed = (performance.now() - t0) / 1000;
  process.stdout.write(JSON.stringify({ rps: requests / elapsed, requests, errors, seconds: elapsed }));
}

if (import.meta.main && process.argv[2] === "--child") {
  await child(process.argv[3]!, Number(process.argv[4]), Number(process.argv[5]), process.argv.slice(6));
}
