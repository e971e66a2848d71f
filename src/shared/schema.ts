/**
 * TypeBox for services: the same @sinclair/typebox that Elysia's `t` is built on (pinned to
 * Elysia's version), so schemas are shared with the routes without services importing Elysia.
 */
import { Type, type TSchema } from "@sinclair/typebox";

export { Type as t } from "@sinclair/typebox";
export type { Static, TSchema } from "@sinclair/typebox";

/** `T | null`: the wire shape of every optional value the upstream contract writes as null. */
export const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);
