import { Elysia, t } from "elysia";
import { API_VERSION, VERSION } from "../version.ts";

export const HealthResponse = t.Object({
  status: t.Literal("alive"),
  version: t.String(),
  api_version: t.String(),
});

/** `GET /v1/health`: exactly the upstream shape; queen-rbee polls it every 100 ms at start. */
export const healthController = () =>
  new Elysia({ name: "hive.health" }).get(
    "/v1/health",
    () => ({ status: "alive" as const, version: VERSION, api_version: API_VERSION }),
    { response: { 200: HealthResponse }, detail: { tags: ["health"], summary: "Liveness of the hive (public)" } },
  );
