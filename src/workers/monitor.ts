/**
 * Health monitor: every interval each running worker gets `GET /health` (the path upstream got
 * wrong), concurrently and each with its own timeout, so one slow worker never delays the others.
 * After `failure_threshold` consecutive failures, or a stale heartbeat from a worker that sends
 * heartbeats, the worker is handed to the lifecycle manager as unhealthy (stop → restart policy).
 * Process exits are not polled for: they come from the supervisor.
 */
import type { HiveConfig } from "../config.ts";
import type { HiveBus } from "../events.ts";
import type { WorkerRegistry } from "./registry.ts";
import { isHealthyAnswer } from "./worker-health.ts";
import type { Clock } from "../shared/clock.ts";
import { errorMessage } from "../shared/errors.ts";
import type { HttpClient } from "../shared/http-client.ts";
import type { Logger } from "../shared/logger.ts";
import { fromSystemTime } from "../shared/rbee-types.ts";

export interface MonitoredLifecycle {
  healthTarget(id: string): { url: string; healthyStatus: string[] } | undefined;
  markUnhealthy(id: string, why: string): void;
}

export interface MonitorDeps {
  config: HiveConfig["monitor"];
  registry: WorkerRegistry;
  lifecycle: MonitoredLifecycle;
  http: HttpClient;
  bus: HiveBus;
  clock: Clock;
  logger: Logger;
}

export class HealthMonitor {
  private timer: ReturnType<typeof setInterval> | null = null;
  private readonly inFlight = new Set<string>();

  constructor(private readonly d: MonitorDeps) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.tick(), this.d.config.interval_s * 1000);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** One round: checks start together; a worker whose last check is still running is skipped. */
  async tick(): Promise<void> {
    const now = this.d.clock.now();
    const checks: Promise<void>[] = [];
    for (const w of this.d.registry.list()) {
      if (w.state === "loading" || w.phase !== "running" || this.inFlight.has(w.id)) continue;
      if (w.ready_at && now - fromSystemTime(w.ready_at) < this.d.config.startup_grace_s * 1000) continue;
      if (w.last_heartbeat) {
        const age = now - fromSystemTime(w.last_heartbeat);
        if (age > this.d.config.heartbeat_stale_s * 1000) {
          this.d.lifecycle.markUnhealthy(w.id, `no heartbeat for ${Math.round(age / 100) / 10} s (heartbeat_stale_s = ${this.d.config.heartbeat_stale_s})`);
          continue;
        }
      }
      checks.push(this.check(w.id));
    }
    await Promise.all(checks);
  }

  private async check(id: string): Promise<void> {
    const target = this.d.lifecycle.healthTarget(id);
    if (!target) return;
    this.inFlight.add(id);
    let failure: string | null = null;
    const started = this.d.clock.monotonic();
    try {
      const res = await this.d.http.request(target.url, { timeoutMs: this.d.config.timeout_s * 1000 });
      if (!isHealthyAnswer(res.status, res.body, target.healthyStatus)) {
        failure = `GET /health answered ${res.status} ${JSON.stringify(res.body)?.slice(0, 200)}`;
      }
    } catch (e) {
      failure = errorMessage(e);
    } finally {
      this.inFlight.delete(id);
    }
    this.d.bus.publish("health_checked", { worker_id: id, ok: failure === null, seconds: (this.d.clock.monotonic() - started) / 1000 });
    const w = this.d.registry.live(id);
    if (!w || w.phase !== "running") return; // exited or replaced meanwhile
    if (!failure) {
      if (w.failed_health_checks > 0) {
        this.d.registry.update(id, { failed_health_checks: 0 });
        this.d.bus.publish("health_recovered", { worker_id: id });
      }
      return;
    }
    const failures = w.failed_health_checks + 1;
    this.d.registry.update(id, { failed_health_checks: failures });
    this.d.bus.publish("health_failed", { worker_id: id, failures, error: failure });
    this.d.logger.warn("worker health check failed", { worker_id: id, failures, err: failure });
    if (failures >= this.d.config.failure_threshold) {
      this.d.lifecycle.markUnhealthy(id, `${failures} consecutive failed health checks (last: ${failure})`);
    }
  }
}
