/**
 * X-Deadline at the door: right after auth (an unauthenticated caller gets its 401 whatever the
 * header says) and before the body is read or anything is done, a deadline that has passed is
 * answered 504 DEADLINE_EXCEEDED and one that is not unix ms 400 INVALID_INPUT. The time left is
 * in the request's context (src/shared/correlation.ts) for the calls made for it.
 */
import { Elysia } from "elysia";
import { contextOf } from "../../shared/correlation.ts";
import { deadlineExceeded, invalidDeadline } from "../../shared/deadline-propagation.ts";
import { jsonError } from "../errors.ts";

/** `now`: the wall clock (X-Deadline is an instant on the caller's clock, not the hive's injected one). */
export const deadlinePlugin = (opts: { now: () => number }) =>
  new Elysia({ name: "hive.deadline" }).onRequest(({ request }) => {
    const ctx = contextOf(request);
    const refusal = ctx.deadlineInvalid ? invalidDeadline() : ctx.deadline !== null && ctx.deadline <= opts.now() ? deadlineExceeded() : null;
    if (refusal) return jsonError(refusal.status, refusal.code, refusal.message, refusal.details);
  });
