/**
 * One error plugin: every failure becomes `{"error":{"code","message"}}` with the right status.
 * 5xx answers never carry internals; they are logged with the request instead.
 */
import { Elysia } from "elysia";
import { ValueErrorType } from "@sinclair/typebox/errors";
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

/** Where a validation error happened, as a caller would name it. */
const LOCATION: Record<string, string> = { query: "query parameter ", params: "path parameter ", headers: "header " };

interface ValueErrorLike {
  type?: number;
  path?: string;
  message?: string;
  errors?: Iterable<ValueErrorLike>[];
}

/**
 * The most specific failure: Elysia wraps numbers in a union with their numeric-string form, so a
 * union's own "Expected union value" is replaced by the last alternative's (the declared schema's).
 */
function specific(error: ValueErrorLike): ValueErrorLike {
  if (error.type !== ValueErrorType.Union || !error.errors?.length) return error;
  for (let i = error.errors.length - 1; i >= 0; i--) {
    const first = [...error.errors[i]!][0];
    if (first) return specific({ ...first, path: error.path });
  }
  return error;
}

/** Turn an Elysia validation error into one sentence naming the field: `device: Expected integer …`. */
export function validationMessage(error: unknown): string {
  const e = error as { type?: string; customError?: unknown; valueError?: ValueErrorLike };
  // A route that names its own message (query parameters, whose errors carry no field name).
  if (typeof e.customError === "string") return e.customError;
  const v = e.valueError ? specific(e.valueError) : undefined;
  if (!v) return "invalid request";
  const field = (v.path ?? "").replace(/^\//, "").replace(/\//g, ".") || (e.type === "body" ? "body" : "value");
  const what = v.type === ValueErrorType.ObjectRequiredProperty ? "is required" : (v.message ?? "invalid value");
  return `${LOCATION[e.type ?? ""] ?? ""}${field}: ${what}`;
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
        // A body the client cut short (it closed its side mid-body) surfaces as the read's
        // AbortError, whose DOMException code (20) Elysia passes on as if it were a status.
        if ((error as Error)?.name === "AbortError") return jsonError(400, "REQUEST_ABORTED", "the request body ended before it was complete");
        const status = typeof code === "number" && code >= 400 && code <= 599 ? code : 500;
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
