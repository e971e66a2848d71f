/**
 * How the hive judges a worker's health answer and waits for it to become healthy. Shared by
 * readiness (after the callback, or by polling for http profiles) and the monitor.
 */
import type { HttpClient } from "../shared/http-client.ts";

/**
 * How the hive itself reaches a worker on this host. The advertised URL uses RBEE_WORKER_HOST,
 * which is for queen-rbee and may not be reachable (or even local) from here.
 */
export const localUrl = (port: number) => `http://127.0.0.1:${port}`;

/** The URL in the worker's record, for queen-rbee: `[workers] host` (RBEE_WORKER_HOST) and the port. */
export const advertisedUrl = (host: string, port: number) => `http://${host}:${port}`;

/** A health answer is healthy when it is 2xx and its JSON `status` is one the profile accepts. */
export function isHealthyAnswer(status: number, body: unknown, healthyStatus: string[]): boolean {
  if (status < 200 || status >= 300) return false;
  if (healthyStatus.length === 0) return true;
  const s = (body as { status?: unknown } | null)?.status;
  return typeof s === "string" && healthyStatus.includes(s);
}

/**
 * Poll `url` until it answers healthy (true) or `signal` aborts (false). Upstream workers call
 * back just before they listen: polling starts at 2 ms and doubles up to `intervalMs`, so
 * readiness is seen within milliseconds without a busy loop.
 */
export async function pollUntilHealthy(
  http: HttpClient,
  url: string,
  healthyStatus: string[],
  intervalMs: number,
  signal: AbortSignal,
): Promise<boolean> {
  let delay = Math.min(2, intervalMs);
  while (!signal.aborted) {
    try {
      const res = await http.request(url, { timeoutMs: Math.max(1000, intervalMs * 4), signal });
      if (!signal.aborted && isHealthyAnswer(res.status, res.body, healthyStatus)) return true;
    } catch {
      // not listening yet
    }
    await abortableSleep(delay, signal);
    delay = Math.min(delay * 2, intervalMs);
  }
  return false;
}

export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });
}
