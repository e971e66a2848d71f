/**
 * The daemon's stderr log lines are written in batches (one write per turn of the event loop):
 * in order, `warn`/`error` at once with what was pending, and nothing lost at exit.
 */
import { expect, test } from "bun:test";
import { join } from "node:path";
import { ROOT } from "./helpers.ts";

/** Run `body` (with `logger` in scope) in a child Bun; its exit code and stderr lines, parsed. */
async function run(body: string): Promise<{ code: number; lines: Array<Record<string, unknown>> }> {
  const script = `import { createLogger } from ${JSON.stringify(join(ROOT, "src/shared/logger.ts"))};
const logger = createLogger({ format: "json", level: "info" });
${body}`;
  const proc = Bun.spawn([process.execPath, "-e", script], { stdout: "ignore", stderr: "pipe" });
  const text = await new Response(proc.stderr).text();
  const code = await proc.exited;
  return { code, lines: text.trim().split("\n").filter(Boolean).map((l) => JSON.parse(l)) };
}

test("lines of one turn come out in order, all of them", async () => {
  const { code, lines } = await run(`for (let i = 0; i < 1500; i++) logger.info("line", { i });`);
  expect(code).toBe(0);
  expect(lines.map((l) => l.i)).toEqual(Array.from({ length: 1500 }, (_, i) => i));
});

test("a warn line goes out at once, with what was pending before it", async () => {
  // SIGKILLed in the same turn: the info line after the warn was still waiting for its batch.
  const { lines } = await run(`logger.info("first"); logger.warn("second"); logger.info("pending"); process.kill(process.pid, "SIGKILL");`);
  expect(lines.map((l) => l.msg)).toEqual(["first", "second"]);
});

test("what is pending at exit is written", async () => {
  const { code, lines } = await run(`logger.info("a"); logger.info("b"); process.exit(0);`);
  expect(code).toBe(0);
  expect(lines.map((l) => [l.level, l.msg])).toEqual([["info", "a"], ["info", "b"]]);
});
