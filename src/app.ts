/**
 * createApp(deps): composes one Elysia controller per area. No module singletons: tests build a
 * fresh app with their own services, temp dirs and clocks.
 */
import { Elysia } from "elysia";
import { openapi } from "@elysiajs/openapi";
import { hiveIdOf, type HiveConfig } from "./config.ts";
import type { Logger } from "./shared/logger.ts";
import { errorPlugin } from "./http/errors.ts";
import { authPlugin, type AuthOptions } from "./http/middleware/auth.ts";
import { bodyLimitPlugin } from "./http/middleware/body-limit.ts";
import { deadlinePlugin } from "./http/middleware/deadline.ts";
import { isStreamedPath } from "./http/proxy.ts";
import { healthController, type CatalogHealthProbe } from "./http/health.ts";
import { hiveInfoController } from "./http/hive-info.ts";
import { statusPageController } from "./http/status-page.ts";
import { VERSION } from "./version.ts";
import { renderDocsPage, type OpenApiSpec } from "./http/docs-page.ts";
import { streamedResponse } from "./http/schemas.ts";

export interface AppDeps {
  config: HiveConfig;
  logger: Logger;
  /** LLORCH_API_TOKEN; unset only on a loopback bind. */
  apiToken?: string;
  callbackAccess?: AuthOptions["callbackAccess"];
  onAuthEvent?: AuthOptions["onAuthEvent"];
  /** State of the model catalog for GET /v1/health (absent: the field is left out). */
  catalogHealth?: CatalogHealthProbe;
  /** Controllers for the other areas, composed after auth. */
  controllers?: Elysia<any, any, any, any, any, any, any>[];
}

export function createApp(deps: AppDeps) {
  // standardHostname: false → the router finds the path after the real host, however short the
  // Host header is (with the default, `Host: a` shifted the routed path).
  let app = new Elysia({ name: "rbee-hive", handler: { standardHostname: false } })
    .use(errorPlugin(deps.logger))
    .use(
      openapi({
        path: "/openapi",
        // The daemon runs offline: serve the spec, not a UI that needs a CDN.
        provider: null,
        documentation: {
          info: {
            title: "rbee-hive",
            version: VERSION,
            description: "Host agent of an rbee LLM cluster. Every route except /v1/health, /metrics, /openapi, /openapi/json and the status page (/, /ui/app.js, /ui/app.css) needs `Authorization: Bearer <LLORCH_API_TOKEN>` when a token is set.",
          },
          components: { securitySchemes: { bearer: { type: "http", scheme: "bearer" } } },
          security: [{ bearer: [] }],
        },
      }),
    )
    .use(
      authPlugin({
        token: deps.apiToken,
        logger: deps.logger,
        callbackAccess: deps.callbackAccess,
        onAuthEvent: deps.onAuthEvent,
      }),
    )
    // An expired X-Deadline: 504 after auth, before any work.
    .use(deadlinePlugin({ now: Date.now }))
    // The inference and proxy routes stream their bodies to the worker and count them themselves.
    .use(bodyLimitPlugin({ limitFor: (path) => (isStreamedPath(path) ? null : deps.config.server.body_limit_bytes) }))
    .use(healthController(deps.catalogHealth))
    .use(hiveInfoController({ hiveId: hiveIdOf(deps.config), startedAt: Date.now(), now: Date.now }))
    .use(statusPageController({ tokenRequired: !!deps.apiToken }));
  for (const c of deps.controllers ?? []) app = app.use(c) as typeof app;
  let docs: string | undefined;
  return app.get(
    "/openapi",
    async () => {
      // Rendered once from the spec this same app serves.
      docs ??= renderDocsPage((await (await app.handle(new Request("http://localhost/openapi/json"))).json()) as OpenApiSpec);
      return new Response(docs, { headers: { "content-type": "text/html; charset=utf-8" } });
    },
    { detail: { tags: ["docs"], summary: "This API as a plain HTML page that works offline (public)", responses: streamedResponse("text/html", "HTML page") } },
  );
}

export type HiveApp = ReturnType<typeof createApp>;
