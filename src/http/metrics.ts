import { Elysia } from "elysia";
import type { HiveMetrics } from "../metrics.ts";

/** `GET /metrics` (public): Prometheus text format. */
export const metricsController = (metrics: HiveMetrics) =>
  new Elysia({ name: "hive.metrics" }).get(
    "/metrics",
    async () => new Response(await metrics.render(), { headers: { "content-type": metrics.contentType } }),
    { detail: { tags: ["metrics"], summary: "Prometheus metrics (public)" } },
  );
