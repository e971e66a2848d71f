import { replaceSchemaType, t } from "elysia";
import { CloneType, Kind, OptionalKind, Type, type TSchema } from "@sinclair/typebox";
import { Field as SharedField } from "../shared/fields.ts";

/** The error body every failure uses. */
export const ErrorResponse = t.Object({
  error: t.Object({
    code: t.String({ description: "stable machine-readable code" }),
    message: t.String(),
    details: t.Optional(t.Record(t.String(), t.Unknown())),
  }),
});

export const MessageResponse = t.Object({ message: t.String() });

/** Standard error answers, spread into each route's `response`. */
export const errorResponses = {
  400: ErrorResponse,
  401: ErrorResponse,
  404: ErrorResponse,
  500: ErrorResponse,
} as const;

/** OpenAPI description of a streamed answer (SSE or text), which has no TypeBox body schema. */
export const streamedResponse = (contentType: string, description: string) => ({
  200: { description, content: { [contentType]: { schema: { type: "string" as const } } } },
});

/**
 * The bounded fields (src/shared/fields.ts), plus the one only a route has: a query parameter,
 * whose errors carry no field name, so it brings its own message.
 */
export const Field = {
  ...SharedField,
  queryInteger: (name: string, minimum: number, maximum: number) =>
    t.Integer({ minimum, maximum, error: `query parameter ${name}: must be an integer from ${minimum} to ${maximum}` }),
};

/**
 * A service's request schema (plain TypeBox) as a route validates it: integer fields take Elysia's
 * form, which also accepts the decimal string ("0") that these routes have always accepted.
 */
export function wireRequest<T extends TSchema>(schema: T): T {
  return replaceSchemaType(schema, {
    from: Type.Integer(),
    to: (s) => {
      const { [Kind]: _kind, [OptionalKind]: optional, type: _type, ...options } = s as TSchema & { [OptionalKind]?: unknown };
      const wide = t.Integer(options);
      return optional ? t.Optional(wide) : wide;
    },
  }) as T;
}

/**
 * Schemas registered by name (`.model()`): named components in /openapi/json. Registered as
 * copies, since Elysia writes `$id` into what it registers and the services share the originals.
 */
export const namedModels = <M extends Record<string, TSchema>>(models: M): M =>
  Object.fromEntries(Object.entries(models).map(([name, schema]) => [name, CloneType(schema)])) as M;
