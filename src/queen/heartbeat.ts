/**
 * Hive → queen-rbee heartbeat (when QUEEN_CALLBACK_URL is set): `POST {queen}/v1/heartbeat` every
 * `[queen] heartbeat_interval_s` with Bearer and the contract body
 *   {"hive_id","timestamp","workers":[{"worker_id","state","last_heartbeat","health_status","url",
 *     "model_id","backend","device_id","vram_bytes"|"ram_bytes"}]}.
 *
 * The schedule is fixed-rate (due times start + n·interval, not "interval after the last send"), so
 * a slow answer never shifts the next beat; a beat whose predecessor is still waiting for queen is
 * skipped rather than piled up. The body is built from the registry's frozen snapshots, in memory:
 * no download, worker or disk is waited for. While queen fails, the interval doubles per failure
 * up to MAX_BACKOFF_MS (and back to the interval at the first success).
 */
import { errorMessage } from "../shared/errors.ts";
import type { HttpClient } from "../shared/http-client.ts";
import type { Logger } from "../shared/logger.ts";
import { fromSystemTime } from "../shared/rbee-types.ts";
import type { WorkerSnapshot } from "../workers/registry.ts";

/** The longest gap between two beats while queen-rbee is failing. */
export const MAX_BACKOFF_MS = 60_000;
/** Upstream's timeout of a hive → queen call. */
const SEND_TIMEOUT_MS = 5_000;

export interface HeartbeatWorker {
  worker_id: string;
  state: string;
  last_heartbeat: string;
  health_status: string;
  url: string;
  model_id: string;
  backend: string;
  device_id: number;
  vram_bytes?: number;
  ram_bytes?: number;
}

export interface HeartbeatBody {
  hive_id: string;
  timestamp: string;
  workers: HeartbeatWorker[];
}

export interface HeartbeatOutcome {
  ok: boolean;
  /** Request to answer. */
  seconds: number;
  /** How late the beat left against its due time. */
  late_seconds: number;
  status: number | null;
}

export interface QueenHeartbeatOptions {
  http: HttpClient;
  logger: Logger;
  /** QUEEN_CALLBACK_URL (non-empty). */
  callbackUrl: string;
  token?: string;
  hiveId: string;
  intervalMs: number;
  workers: () => readonly WorkerSnapshot[];
  /** Unix ms for the body's timestamp. */
  now?: () => number;
  /** Monotonic ms for the schedule. */
  monotonic?: () => number;
  onBeat?: (o: HeartbeatOutcome) => void;
}

const rfc3339 = (ms: number) => new Date(ms).toISOString();

/** One worker as queen-rbee's heartbeat contract has it. */
export function heartbeatWorker(w: WorkerSnapshot): HeartbeatWorker {
  // The last sign of life the hive saw: the worker's own heartbeat, else its ready time, else its start.
  const lastSeen = w.last_heartbeat ?? w.ready_at ?? w.started_at;
  const memory = w.memory_used_bytes ?? w.memory_estimate_bytes;
  return {
    worker_id: w.id,
    state: w.state,
    last_heartbeat: rfc3339(fromSystemTime(lastSeen)),
    health_status: w.health_status ?? (w.failed_health_checks > 0 ? "degraded" : "healthy"),
    url: w.url,
    model_id: w.model_ref,
    backend: w.backend,
    device_id: w.device,
    ...(memory === null ? {} : w.backend === "cpu" ? { ram_bytes: memory } : { vram_bytes: memory }),
  };
}

export class QueenHeartbeat {
  private timer: ReturnType<typeof setTimeout> | null = null;
  private sending = false;
  private failures = 0;
  private nextDue = 0;
  private readonly url: string;
  private readonly now: () => number;
  private readonly monotonic: () => number;

  constructor(private readonly o: QueenHeartbeatOptions) {
    this.url = `${o.callbackUrl.replace(/\/+$/, "")}/v1/heartbeat`;
    this.now = o.now ?? Date.now;
    this.monotonic = o.monotonic ?? (() => performance.now());
  }

  /** The first beat goes out at once, then one per interval. */
  start(): void {
    if (this.timer) return;
    this.nextDue = this.monotonic();
    this.schedule();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  body(): HeartbeatBody {
    return { hive_id: this.o.hiveId, timestamp: rfc3339(this.now()), workers: this.o.workers().map(heartbeatWorker) };
  }

  private schedule(): void {
    this.timer = setTimeout(() => this.beat(), Math.max(0, this.nextDue - this.monotonic()));
  }

  private beat(): void {
    const due = this.nextDue;
    const lateMs = Math.max(0, this.monotonic() - due);
    // Fixed rate: the next due time follows from this one; beats missed by a stalled loop are not sent twice.
    this.nextDue = due + this.gapMs();
    if (this.nextDue < this.monotonic()) this.nextDue = this.monotonic() + this.gapMs();
    this.schedule();
    if (this.sending) {
      this.o.logger.debug("queen heartbeat skipped: the previous one is still waiting for queen-rbee");
      return;
    }
    void this.send(due, lateMs);
  }

  /** The interval, or while queen fails interval · 2^failures (capped). */
  private gapMs(): number {
    return this.failures === 0 ? this.o.intervalMs : Math.min(this.o.intervalMs * 2 ** this.failures, Math.max(this.o.intervalMs, MAX_BACKOFF_MS));
  }

  private async send(due: number, lateMs: number): Promise<void> {
    this.sending = true;
    const started = this.monotonic();
    let status: number | null = null;
    let ok = false;
    try {
      const res = await this.o.http.request(this.url, { json: this.body(), token: this.o.token, timeoutMs: Math.min(SEND_TIMEOUT_MS, Math.max(1000, this.o.intervalMs)) });
      status = res.status;
      ok = res.ok;
      if (!ok) this.failed(`queen-rbee answered ${res.status}`);
    } catch (e) {
      this.failed(errorMessage(e));
    } finally {
      this.sending = false;
    }
    if (ok) {
      if (this.failures > 0) this.o.logger.info("queen heartbeat recovered", { after_failures: this.failures });
      this.failures = 0;
    } else if (this.timer && due + this.gapMs() > this.nextDue) {
      // Back off from this beat's due time: the beat already scheduled moves out.
      this.nextDue = due + this.gapMs();
      clearTimeout(this.timer);
      this.schedule();
    }
    this.o.onBeat?.({ ok, seconds: (this.monotonic() - started) / 1000, late_seconds: lateMs / 1000, status });
  }

  private failed(why: string): void {
    this.failures++;
    // One line when queen goes away, then one per doubling: not one per beat while it is down.
    if ((this.failures & (this.failures - 1)) === 0) this.o.logger.warn("queen heartbeat failed; backing off", { err: why, failures: this.failures });
  }
}
