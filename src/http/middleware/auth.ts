/**
 * Auth plugin: every route needs `Authorization: Bearer <LLORCH_API_TOKEN>` except the public ones
 * and the worker callbacks, which upstream workers send without a header (protocol §3).
 *
 * It runs at `onRequest`, before the body is read, parsed or validated: an unauthenticated caller
 * gets the exact upstream 401 whatever it sent, and learns nothing about the schema or the limits.
 * Only a worker callback's body is looked at (bounded), to see which worker it names.
 */
import { Elysia } from "elysia";
import { checkBearer } from "../../shared/auth-min.ts";
import type { Logger } from "../../shared/logger.ts";
import { jsonError } from "../errors.ts";
import { pathOf, readBounded } from "../request-path.ts";
import { STATUS_PAGE_PATHS } from "../status-page.ts";

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
  /** Told of every auth decision; the request is passed so the answer can be held (audit flush). */
  onAuthEvent?: (event: AuthEvent, request: Request) => void;
}

/** The status page's files are public too (src/http/status-page.ts): the page itself asks for the token. */
export const PUBLIC_PATHS = new Set<string>(["/v1/health", "/metrics", "/openapi", "/openapi/json", ...STATUS_PAGE_PATHS]);
export const CALLBACK_PATHS = new Set(["/v1/workers/ready", "/v1/heartbeat", "/v1/workers/ready/v1/heartbeat"]);
/** A callback body is a handful of fields; anything larger is not a worker talking. */
const MAX_CALLBACK_BODY_BYTES = 16 * 1024;

export const isPublicPath = (path: string) => PUBLIC_PATHS.has(path);

/** The JSON body of a callback, if it is a small JSON object; else undefined. */
async function callbackBody(request: Request): Promise<unknown> {
  const bytes = await readBounded(request, MAX_CALLBACK_BODY_BYTES);
  if (!bytes) return undefined;
  try {
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return undefined;
  }
}

export const authPlugin = (opts: AuthOptions) =>
  new Elysia({ name: "hive.auth" }).onRequest(async ({ request }) => {
    if (!opts.token) return;
    const path = pathOf(request);
    if (isPublicPath(path)) return;
    const outcome = checkBearer(request.headers.get("authorization"), opts.token);
    if (outcome.ok) {
      opts.onAuthEvent?.({ outcome: "success", path, method: request.method, fingerprint: outcome.fingerprint }, request);
      return;
    }
    if (CALLBACK_PATHS.has(path) && request.method === "POST" && opts.callbackAccess) {
      const access = opts.callbackAccess(path, await callbackBody(request));
      if (access === "allow") return;
      if (access === "unknown") return jsonError(404, "WORKER_NOT_FOUND", "no worker with this worker_id was spawned by this hive");
    }
    opts.logger.warn("auth failed", { method: request.method, path, code: outcome.error.code, token: outcome.fingerprint });
    opts.onAuthEvent?.({ outcome: "failure", path, method: request.method, fingerprint: outcome.fingerprint, reason: outcome.error.code }, request);
    return jsonError(401, outcome.error.code, outcome.error.message);
  });
