/**
 * Bounded fields, one definition each: every number and string a caller sends has limits, so bad
 * input is refused at the edge with the field named, before any work starts. Plain TypeBox, so
 * the services' request schemas use them too; the HTTP edge widens integers (src/http/schemas.ts).
 */
import { t } from "./schema.ts";

export const Field = {
  modelRef: (description = 'e.g. "hf:TheBloke/TinyLlama-1.1B-Chat-v1.0-GGUF" or "file:/abs/path.gguf"') =>
    t.String({ minLength: 1, maxLength: 512, description }),
  identifier: (description: string) => t.String({ minLength: 1, maxLength: 64, description }),
  workerId: () => t.String({ minLength: 1, maxLength: 128, description: "worker-<uuid v4>" }),
  /** Device index on the host (GPU ordinal); hosts have far fewer than 256. */
  device: () => t.Integer({ minimum: 0, maximum: 255 }),
  revision: () => t.String({ minLength: 1, maxLength: 255, description: "branch, tag or commit (default main)" }),
  /** Tokens of context a worker runs with (llama.cpp's largest is 2^20). */
  context: (description = "tokens of context the worker runs with; sizes the memory estimate's KV cache") =>
    t.Integer({ minimum: 1, maximum: 1_048_576, description }),
  url: () => t.String({ maxLength: 2048 }),
  /** RFC 3339 date-time as upstream workers send it (chrono's to_rfc3339). */
  timestamp: () =>
    t.String({
      maxLength: 64,
      pattern: "^\\d{4}-\\d{2}-\\d{2}[Tt ]\\d{2}:\\d{2}:\\d{2}(\\.\\d{1,9})?([Zz]|[+-]\\d{2}:\\d{2})$",
      error: "timestamp: Expected string to match 'RFC 3339 date-time, e.g. 2026-11-30T12:00:00Z'",
    }),
};
