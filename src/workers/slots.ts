/**
 * How many requests a worker serves at once: the profile's `slots` number, or, with
 * `slots = "props"`, what the worker itself says once ready (llama.cpp's `GET /props` answers
 * `total_slots`, its `--parallel`). A worker that does not say is counted with one slot.
 */
import type { WorkerProfile } from "../config.ts";
import { errorMessage } from "../shared/errors.ts";
import type { HttpClient } from "../shared/http-client.ts";
import type { Logger } from "../shared/logger.ts";
import { localUrl } from "./worker-health.ts";

export const PROPS_PATH = "/props";
const PROPS_TIMEOUT_MS = 5000;
const FALLBACK_SLOTS = 1;

export async function slotsOf(
  profile: WorkerProfile,
  worker: { id: string; port: number },
  d: { http: HttpClient; logger: Logger; token?: string; signal?: AbortSignal },
): Promise<number> {
  if (profile.slots !== "props") return profile.slots;
  let why: string;
  try {
    const res = await d.http.request<{ total_slots?: unknown } | null>(`${localUrl(worker.port)}${PROPS_PATH}`, {
      timeoutMs: PROPS_TIMEOUT_MS,
      token: d.token,
      signal: d.signal,
    });
    const total = res.body?.total_slots;
    if (res.ok && typeof total === "number" && Number.isInteger(total) && total >= 1) return total;
    why = `GET ${PROPS_PATH} answered ${res.status} without a total_slots of 1 or more`;
  } catch (e) {
    why = errorMessage(e);
  }
  d.logger.warn("could not read the worker's slots; counting one", { worker_id: worker.id, why });
  return FALLBACK_SLOTS;
}
