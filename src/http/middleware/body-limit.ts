/**
 * Body limit: larger request bodies get 413 PAYLOAD_TOO_LARGE with the JSON error, before any
 * parsing. Runs after auth, so an unauthenticated caller never learns the limit. A declared length
 * is checked up front; a chunked body is read (bounded) from a clone.
 */
import { Elysia } from "elysia";
import { jsonError } from "../errors.ts";
import { declaredLength, pathOf, readBounded } from "../request-path.ts";

export interface BodyLimitOptions {
  /** The limit for a path; null for routes that stream their body and enforce their own limit. */
  limitFor: (path: string) => number | null;
}

const tooLarge = (limit: number, size?: number) =>
  jsonError(413, "PAYLOAD_TOO_LARGE", `request body ${size !== undefined ? `is ${size} bytes` : "is too large"}; the limit is ${limit} bytes`);

export const bodyLimitPlugin = (opts: BodyLimitOptions) =>
  new Elysia({ name: "hive.body-limit" }).onRequest(async ({ request }) => {
    // Most requests (GET, HEAD, DELETE) carry no body: nothing to measure, not even the path.
    if (!request.body) return;
    const limit = opts.limitFor(pathOf(request));
    if (limit === null) return; // never read ahead: the route streams the body and counts it
    const declared = declaredLength(request);
    if (declared !== undefined) return declared > limit ? tooLarge(limit, declared) : undefined;
    if ((await readBounded(request, limit)) === null) return tooLarge(limit);
  });
