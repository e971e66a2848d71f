/**
 * The ONE function through which a forwarded request finds its worker. Today the caller names the
 * worker (`/v1/workers/{id}/inference`, `/v1/workers/{id}/proxy/…`); routing by model (OpenAI's
 * `model` field picking a worker that serves it) will pick one here too, so everything that
 * forwards keeps asking this one place.
 */
import type { WorkerProfile } from "../config.ts";
import { workerNotReady } from "./activity.ts";
import { unknownWorker, type WorkerRegistry } from "./registry.ts";
import { localUrl } from "./worker-health.ts";

export interface ProxyTarget {
  workerId: string;
  /** How the hive reaches the worker (loopback, whatever its advertised host is). */
  baseUrl: string;
  /** Where the inference route of its profile forwards. */
  inferencePath: string;
}

/** Throws 404 WORKER_NOT_FOUND (no live worker) or 503 WORKER_NOT_READY (loading, restarting, stopping). */
export type TargetResolver = (workerId: string) => ProxyTarget;

export function createTargetResolver(registry: WorkerRegistry, profileOf: (name: string) => WorkerProfile | undefined): TargetResolver {
  return (workerId) => {
    const w = registry.live(workerId);
    if (!w) throw unknownWorker(workerId);
    if (w.state === "loading" || w.phase !== "running") throw workerNotReady(workerId, `it is ${w.phase}`, { phase: w.phase, state: w.state });
    const profile = profileOf(w.profile);
    return { workerId, baseUrl: localUrl(w.port), inferencePath: profile?.inference_path ?? "/v1/inference" };
  };
}
