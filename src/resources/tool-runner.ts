/**
 * Runs a host tool (nvidia-smi, rocm-smi, sysctl, vm_stat) as an argv, never through a shell,
 * in its own process group, with a timeout that kills the whole group (a wedged driver call can
 * leave a tool hung in the kernel, and a wrapper script can leave children). A tool that is
 * missing, fails, hangs or floods its output is a result with a reason, never a throw.
 */
export type ToolResult =
  | { ok: true; stdout: string; stderr: string; code: 0; pid: number }
  | { ok: false; kind: "missing" | "failed" | "timeout" | "too_large"; reason: string; stdout: string; stderr: string; code: number | null; pid: number | null };

export interface ToolOptions {
  timeoutMs: number;
  /** Environment of the tool, PATH included (default: the hive's). */
  env?: Record<string, string | undefined>;
  /** Output beyond this many bytes (stdout + stderr) kills the tool. */
  maxOutputBytes?: number;
}

export type ToolRunner = (argv: string[], opts: ToolOptions) => Promise<ToolResult>;

const DEFAULT_MAX_OUTPUT = 4 * 1024 * 1024;

/** First non-empty line, trimmed and bounded: what a log line or an API answer can carry. */
export function firstLine(text: string, max = 300): string {
  const line = text.split("\n").map((l) => l.trim()).find((l) => l.length > 0) ?? "";
  return line.length > max ? line.slice(0, max) + "…" : line;
}

function killGroup(pid: number): void {
  try {
    process.kill(-pid, "SIGKILL");
  } catch {
    // already gone
  }
}

export const runTool: ToolRunner = async (argv, opts) => {
  const env = opts.env ?? process.env;
  const name = argv[0]!;
  // Resolve on the tool's own PATH first: a missing tool is the common case on a host without
  // that vendor's GPUs and must cost no process start.
  const exe = name.includes("/") ? name : Bun.which(name, { PATH: env.PATH ?? "" });
  if (!exe) return { ok: false, kind: "missing", reason: `${name} not found on PATH`, stdout: "", stderr: "", code: null, pid: null };
  let proc: Bun.Subprocess<"ignore", "pipe", "pipe">;
  try {
    proc = Bun.spawn([exe, ...argv.slice(1)], { stdin: "ignore", stdout: "pipe", stderr: "pipe", env: env as Record<string, string>, detached: true });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const kind = code === "ENOENT" ? "missing" : "failed";
    return { ok: false, kind, reason: `${name} could not be started: ${code ?? String(e)}`, stdout: "", stderr: "", code: null, pid: null };
  }
  const pid = proc.pid;
  const max = opts.maxOutputBytes ?? DEFAULT_MAX_OUTPUT;
  let total = 0;
  let tooLarge = false;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup(pid);
  }, opts.timeoutMs);
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    const chunks: Uint8Array[] = [];
    const reader = stream.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > max) {
        tooLarge = true;
        killGroup(pid);
        break;
      }
      chunks.push(value);
    }
    return Buffer.concat(chunks).toString("utf8");
  };
  // Streams end when every holder of the pipes is gone; a child that escaped the group could keep
  // them open, so the answer never waits past the timeout plus a second.
  const outcome = Promise.all([collect(proc.stdout), collect(proc.stderr), proc.exited]);
  let hardStop: ReturnType<typeof setTimeout> | undefined;
  const abandoned = new Promise<"abandoned">((resolve) => (hardStop = setTimeout(() => resolve("abandoned"), opts.timeoutMs + 1000)));
  try {
    const r = await Promise.race([outcome, abandoned]);
    if (r === "abandoned" || timedOut) {
      const [stdout, stderr] = r === "abandoned" ? ["", ""] : [r[0], r[1]];
      return { ok: false, kind: "timeout", reason: `${name} did not answer within ${opts.timeoutMs / 1000} s (killed)`, stdout, stderr, code: null, pid };
    }
    const [stdout, stderr, code] = r;
    if (tooLarge) return { ok: false, kind: "too_large", reason: `${name} printed more than ${max} bytes (killed)`, stdout: "", stderr: "", code: null, pid };
    if (code !== 0) {
      const said = firstLine(stderr) || firstLine(stdout);
      const how = proc.signalCode ? `was killed by ${proc.signalCode}` : `exited with code ${code}`;
      return { ok: false, kind: "failed", reason: `${name} ${how}${said ? `: ${said}` : ""}`, stdout, stderr, code, pid };
    }
    return { ok: true, stdout, stderr, code: 0, pid };
  } finally {
    clearTimeout(timer);
    clearTimeout(hardStop);
  }
};
