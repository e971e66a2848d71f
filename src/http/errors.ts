/**
 * One error plugin: every failure becomes `{"error":{"code","message"}}` with the right status.
 * 5xx answers never carry internals; they are logged with the request instead.
 */
import { Elysia } from "elysia";
import { HiveError } from "../shared/errors.ts";
import type { Logger } from "../shared/logger.ts";

export const errorBody = (code: string, message: string, details?: Record<string, unknown>) => ({
  error: details ? { code, message, details } : { code, message },
});

export const jsonError = (status: number, code: string, message: string, details?: Record<string, unknown>) =>
  new Response(JSON.stringify(errorBody(code, message, details)), {
    status,
    headers: { "content-type": "application/json" },
  });

/** Turn an Elysia validation error into one sentence naming the field. */
function validationMessage(error: unknown): string {
  const e = error as { all?: Array<{ path?: string; message?: string; summary?: string }>; message?: string };
  const first = e.all?.[0];
  if (first) {
    const field = (first.path ?? "").replace(/^\//, "").replace(/\//g, ".") || "body";
    return `${field}: ${first.summary ?? first.message ?? "invalid value"}`;
  }
  return "invalid request";
}

export const errorPlugin = (logger: Logger) =>
  new Elysia({ name: "hive.errors" }).onError({ as: "global" }, ({ code, error, request, path }) => {
    if (error instanceof HiveError) {
      if (error.status >= 500) logger.error("request failed", { method: request.method, path, code: error.code, err: error.message });
      return jsonError(error.status, error.code, error.message, error.details);
    }
    switch (code) {
      case "VALIDATION":
        return jsonError(400, "INVALID_INPUT", validationMessage(error));
      case "PARSE":
        return jsonError(400, "INVALID_JSON", "request body is not valid JSON");
      case "NOT_FOUND":
        return jsonError(404, "NOT_FOUND", `no route ${request.method} ${path}`);
      default: {
        const status = typeof code === "number" ? code : 500;
        if (status === 413) return jsonError(413, "PAYLOAD_TOO_LARGE", "request body too large");
        if (status < 500) return jsonError(status, "REQUEST_FAILED", (error as Error)?.message ?? "request failed");
        logger.error("unhandled error", {
          method: request.method,
          path,
          err: (error as Error)?.stack ?? String(error),
        });
        return jsonError(500, "INTERNAL", "internal error");
      }
    }
  });
