/**
 * Prometheus metrics, fed by the event bus (the one place services report lifecycle changes) and
 * by the registry at scrape time. A dedicated Registry: tests build many hives in one process.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { HiveBus } from "./events.ts";
import type { WorkerRegistry } from "./workers/registry.ts";
import { VERSION } from "./version.ts";

export class HiveMetrics {
  readonly registry = new Registry();

  constructor(bus: HiveBus, workers: WorkerRegistry) {
    const counter = (name: string, help: string, labelNames: string[] = []) =>
      new Counter({ name, help, labelNames, registers: [this.registry] });
    collectDefaultMetrics({ register: this.registry, prefix: "rbee_hive_" });
    new Gauge({
      name: "rbee_hive_build_info",
      help: "Build information (always 1)",
      labelNames: ["version", "bun_version"],
      registers: [this.registry],
    }).set({ version: VERSION, bun_version: Bun.version }, 1);
    new Gauge({
      name: "rbee_hive_workers",
      help: "Workers by state and phase",
      labelNames: ["state", "phase"],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const w of workers.list()) this.inc({ state: w.state, phase: w.phase });
      },
    });
    const exits = counter("rbee_hive_worker_exits_total", "Worker process exits by reason", ["reason"]);
    const restarts = counter("rbee_hive_worker_restarts_total", "Worker restarts scheduled, by the reason of the exit", ["reason"]);
    const crashLoops = counter("rbee_hive_worker_crash_loops_total", "Workers parked in crash_loop by the restart policy");
    const healthFailures = counter("rbee_hive_worker_health_check_failures_total", "Failed worker health checks");
    const startDuration = new Histogram({
      name: "rbee_hive_worker_start_duration_seconds",
      help: "Spawn to ready, per worker start",
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600],
      registers: [this.registry],
    });
    const downloads = counter("rbee_hive_downloads_total", "Model downloads that ended, by outcome", ["outcome"]);
    const downloadBytes = counter("rbee_hive_download_bytes_total", "Bytes of completed model downloads");
    bus.on("download_complete", (d) => {
      downloads.inc({ outcome: "complete" });
      downloadBytes.inc(d.bytes);
    });
    bus.on("download_failed", (d) => downloads.inc({ outcome: d.code === "DOWNLOAD_CANCELLED" ? "cancelled" : "error" }));
    bus.on("exited", (d) => exits.inc({ reason: d.reason }));
    bus.on("restarting", (d) => restarts.inc({ reason: d.reason }));
    bus.on("crash_loop", () => crashLoops.inc());
    bus.on("health_failed", () => healthFailures.inc());
    bus.on("ready", (d) => startDuration.observe(d.load_ms / 1000));
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
