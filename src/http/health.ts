import { Elysia, t } from "elysia";
import { API_VERSION, VERSION } from "../version.ts";

export const HealthResponse = t.Object({
  status: t.Literal("alive"),
  version: t.String(),
  api_version: t.String(),
  catalog: t.Optional(
    t.Union([t.Literal("ok"), t.Literal("degraded")], {
      description: "hive addition: degraded while the model catalog's last operation failed (see catalog_reason)",
    }),
  ),
  catalog_reason: t.Optional(t.String({ description: 'hive addition, only when degraded: e.g. "write failed: the disk is full (SQLITE_FULL)"' })),
});

/** What the health route asks of the catalog (ModelCatalog.health). */
export type CatalogHealthProbe = () => { status: "ok" } | { status: "degraded"; reason: string };

/**
 * `GET /v1/health`: the upstream fields (queen-rbee polls it every 100 ms at start), plus the
 * catalog's state when the app has one. Still `alive` when degraded: the hive serves workers.
 */
export const healthController = (catalogHealth?: CatalogHealthProbe) =>
  new Elysia({ name: "hive.health" }).get(
    "/v1/health",
    () => {
      const body = { status: "alive" as const, version: VERSION, api_version: API_VERSION };
      if (!catalogHealth) return body;
      const c = catalogHealth();
      return c.status === "ok" ? { ...body, catalog: "ok" as const } : { ...body, catalog: "degraded" as const, catalog_reason: c.reason };
    },
    { response: { 200: HealthResponse }, detail: { tags: ["health"], summary: "Liveness of the hive and the state of its model catalog (public)" } },
  );
