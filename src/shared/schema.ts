/**
 * TypeBox for services: the same @sinclair/typebox that Elysia's `t` is built on (pinned to
 * Elysia's version), so schemas are shared with the routes without services importing Elysia.
 */
export { Type as t } from "@sinclair/typebox";
export type { Static, TSchema } from "@sinclair/typebox";
