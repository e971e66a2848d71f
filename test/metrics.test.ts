import { afterEach, expect, test } from "bun:test";
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
  expect(text).toContain('rbee_hive_worker_exits_total{reason="killed"} 1');
  expect(text).toMatch(/rbee_hive_worker_start_duration_seconds_count 1/);
  expect(text).toMatch(/rbee_hive_build_info\{version="\d+\.\d+\.\d+",bun_version="[^"]+"\} 1/);
  expect(text).toContain("rbee_hive_process_cpu_seconds_total");
  // Every sample line is `name{labels} value`: nothing malformed.
  for (const line of text.split("\n").filter((l) => l && !l.startsWith("#"))) {
    expect(line).toMatch(/^[a-zA-Z_:][a-zA-Z0-9_:]*(\{.*\})? -?[0-9.e+\-]+|NaN|[+-]Inf$/);
  }
});
