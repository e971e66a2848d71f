/**
 * Auth plugin: every route needs `Authorization: Bearer <LLORCH_API_TOKEN>` except the public ones
 * and the worker callbacks, which upstream workers send without a header (protocol §3).
 */
import { Elysia } from "elysia";
import { checkBearer } from "../../shared/auth-min.ts";
import type { Logger } from "../../shared/logger.ts";
import { jsonError } from "../errors.ts";

/** What the hive says about a worker callback that carries no valid token. */
export type CallbackAccess = "allow" | "unknown" | "deny";

export interface AuthEvent {
  outcome: "success" | "failure";
  path: string;
  method: string;
  fingerprint?: string;
  reason?: string;
}

export interface AuthOptions {
  /** Unset = no token configured (only allowed on a loopback bind): every route is open. */
  token?: string;
  logger: Logger;
  /** Decides for the callback routes (ready, heartbeat) when Bearer is missing or wrong. */
  callbackAccess?: (path: string, body: unknown) => CallbackAccess;
  onAuthEvent?: (event: AuthEvent) => void;
}

export const PUBLIC_PATHS = new Set(["/v1/health", "/metrics"]);
export const CALLBACK_PATHS = new Set(["/v1/workers/ready", "/v1/heartbeat", "/v1/workers/ready/v1/heartbeat"]);

export const isPublicPath = (path: string) =>
  PUBLIC_PATHS.has(path) || path === "/openapi" || path.startsWith("/openapi/");

export const authPlugin = (opts: AuthOptions) =>
  new Elysia({ name: "hive.auth" }).onBeforeHandle({ as: "global" }, ({ request, path, body }) => {
    if (!opts.token || isPublicPath(path)) return;
    const outcome = checkBearer(request.headers.get("authorization"), opts.token);
    if (outcome.ok) {
      opts.onAuthEvent?.({ outcome: "success", path, method: request.method, fingerprint: outcome.fingerprint });
      return;
    }
    if (CALLBACK_PATHS.has(path) && opts.callbackAccess) {
      const access = opts.callbackAccess(path, body);
      if (access === "allow") return;
      if (access === "unknown") return jsonError(404, "WORKER_NOT_FOUND", "no worker with this worker_id was spawned by this hive");
    }
    opts.logger.warn("auth failed", { method: request.method, path, code: outcome.error.code, token: outcome.fingerprint });
    opts.onAuthEvent?.({ outcome: "failure", path, method: request.method, fingerprint: outcome.fingerprint, reason: outcome.error.code });
    return jsonError(401, outcome.error.code, outcome.error.message);
  });
