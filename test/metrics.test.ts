import { afterEach, expect, test } from "bun:test";
import { VERSION } from "../src/version.ts";
import { startTestHive, type TestHive } from "./helpers.ts";

const hives: TestHive[] = [];
afterEach(async () => Promise.all(hives.splice(0).map((h) => h.close())));

test("GET /metrics is public Prometheus text with worker state, exits and start durations", async () => {
  const h = await startTestHive({ token: "metrics-token-0123456789" });
  hives.push(h);
  const { worker_id } = await h.spawn();
  const idle = await h.waitState(worker_id, (w) => w.state === "idle", "idle");
  process.kill(idle.pid, "SIGKILL");
  await h.waitState(worker_id, (w) => w.phase === "exited", "exited");
  const res = await h.api("/metrics", { auth: false });
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toContain("text/plain");
  const text = await res.text();
  const lines = text.split("\n");
  expect(lines).toContain('rbee_hive_worker_exits_total{reason="killed"} 1');
  expect(lines).toContain("rbee_hive_worker_start_duration_seconds_count 1");
  expect(lines).toContain(`rbee_hive_build_info{version="${VERSION}",bun_version="${Bun.version}"} 1`);
  expect(lines.some((l) => l.startsWith("rbee_hive_process_cpu_seconds_total "))).toBe(true);
  // Every sample line is `name{labels} value`, the whole line: nothing malformed before or after.
  const sample = /^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"(,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*\})? (-?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|NaN|[+-]Inf)$/;
  for (const probe of ["foo 1 garbage", "!garbage -Inf", "{x} NaN", "foo{a=\"b\"} 1x", "foo 1"]) expect(sample.test(probe)).toBe(probe === "foo 1");
  const malformed = lines.filter((l) => l && !l.startsWith("#") && !sample.test(l));
  expect(malformed).toEqual([]);
});
