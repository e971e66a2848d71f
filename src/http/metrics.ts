import { Elysia } from "elysia";
import type { HiveMetrics } from "../metrics.ts";
import { streamedResponse } from "./schemas.ts";

/** `GET /metrics` (public): Prometheus text format. */
export const metricsController = (metrics: HiveMetrics) =>
  new Elysia({ name: "hive.metrics" }).get(
    "/metrics",
    async () => new Response(await metrics.render(), { headers: { "content-type": metrics.contentType } }),
    {
      detail: {
        tags: ["metrics"],
        summary: "Prometheus metrics (public)",
        responses: streamedResponse("text/plain", "Prometheus text exposition format 0.0.4"),
      },
    },
  );
