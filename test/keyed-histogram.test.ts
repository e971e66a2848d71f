/**
 * The per-request histogram (src/shared/keyed-histogram.ts) must export exactly what prom-client's
 * Histogram exports for the same observations: same lines, same order within a series.
 */
import { expect, test } from "bun:test";
import { Histogram, Registry } from "prom-client";
import { KeyedHistogram } from "../src/shared/keyed-histogram.ts";

const BUCKETS = [0.001, 0.01, 0.1, 1];
const OBSERVATIONS: Array<[[string, string, string], number]> = [
  [["GET", "/v1/health", "200"], 0.0004],
  [["GET", "/v1/health", "200"], 0.001], // on a bound: counted in it (le is inclusive)
  [["GET", "/v1/health", "200"], 0.05],
  [["POST", "/v1/workers/spawn", "507"], 2.5], // past the last bound: only +Inf
  [["GET", "unmatched", "404"], 0.002],
  [["GET", "/v1/health", "200"], Number.NaN], // not a duration: ignored
];

test("exports the same text as prom-client's Histogram for the same observations", async () => {
  const theirs = new Registry();
  const reference = new Histogram({ name: "x_seconds", help: "h", labelNames: ["method", "route", "status"], buckets: BUCKETS, registers: [theirs] });
  const ours = new Registry();
  const keyed = new KeyedHistogram("x_seconds", "h", ["method", "route", "status"], BUCKETS, ours);
  for (const [[method, route, status], v] of OBSERVATIONS) {
    if (Number.isFinite(v)) reference.observe({ method, route, status }, v);
    keyed.observe([method, route, status], v);
  }
  const text = await ours.metrics();
  expect(text).toBe(await theirs.metrics());
  expect(text).toContain('x_seconds_bucket{le="0.001",method="GET",route="/v1/health",status="200"} 2\n');
  expect(text).toContain('x_seconds_bucket{le="+Inf",method="POST",route="/v1/workers/spawn",status="507"} 1\n');
  expect(text).toContain('x_seconds_count{method="GET",route="/v1/health",status="200"} 3\n');
  keyed.reset();
  expect(await ours.metrics()).toBe("# HELP x_seconds h\n# TYPE x_seconds histogram\n");
});
