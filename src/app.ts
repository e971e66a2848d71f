/**
 * createApp(deps): composes one Elysia controller per area. No module singletons: tests build a
 * fresh app with their own services, temp dirs and clocks.
 */
import { Elysia } from "elysia";
import { openapi } from "@elysiajs/openapi";
import type { HiveConfig } from "./config.ts";
import type { Logger } from "./shared/logger.ts";
import { errorPlugin } from "./http/errors.ts";
import { authPlugin, type AuthOptions } from "./http/middleware/auth.ts";
import { healthController } from "./http/health.ts";
import { VERSION } from "./version.ts";

export interface AppDeps {
  config: HiveConfig;
  logger: Logger;
  /** LLORCH_API_TOKEN; unset only on a loopback bind. */
  apiToken?: string;
  callbackAccess?: AuthOptions["callbackAccess"];
  onAuthEvent?: AuthOptions["onAuthEvent"];
  /** Controllers for the other areas, composed after auth. */
  controllers?: Elysia<any, any, any, any, any, any, any>[];
}

export function createApp(deps: AppDeps) {
  let app = new Elysia({ name: "rbee-hive" })
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
            description: "Host agent of an rbee LLM cluster. Every route except /v1/health, /metrics and /openapi needs `Authorization: Bearer <LLORCH_API_TOKEN>` when a token is set.",
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
    .use(healthController());
  for (const c of deps.controllers ?? []) app = app.use(c) as typeof app;
  return app;
}

export type HiveApp = ReturnType<typeof createApp>;
