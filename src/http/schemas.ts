import { t } from "elysia";

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
