/**
 * rbee-types: the only types shared with queen-rbee (as the seed says: WorkerState only),
 * plus the Rust serde SystemTime wire shape both sides use for timestamps.
 */
import { t } from "./schema.ts";

export const WorkerState = t.Union([t.Literal("loading"), t.Literal("idle"), t.Literal("busy")]);
export type WorkerState = typeof WorkerState.static;

/** Rust `SystemTime` as serde writes it. */
export const SystemTime = t.Object({
  secs_since_epoch: t.Integer({ minimum: 0 }),
  nanos_since_epoch: t.Integer({ minimum: 0, maximum: 999_999_999 }),
});
export type SystemTime = typeof SystemTime.static;

export function toSystemTime(ms: number): SystemTime {
  const secs = Math.floor(ms / 1000);
  return { secs_since_epoch: secs, nanos_since_epoch: Math.round((ms - secs * 1000) * 1e6) };
}

export function fromSystemTime(st: SystemTime): number {
  return st.secs_since_epoch * 1000 + st.nanos_since_epoch / 1e6;
}
