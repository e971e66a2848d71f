/**
 * Prometheus metrics in a dedicated Registry (tests build many hives in one process), fed by the
 * event bus (counters and histograms, one handler per event type) and read from the registry and
 * the last device detection at scrape time (gauges: reset and set on every scrape, so they never
 * grow; a scrape costs O(workers + devices), nothing proportional to history).
 *
 * Labels are bounded: states, phases, reasons, outcomes, route templates (never raw paths), device
 * ids; `worker_id` only on the per-worker series, which go when the worker goes.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { HiveBus } from "./events.ts";
import type { WorkerRegistry } from "./workers/registry.ts";
import type { HostSnapshot } from "./resources/types.ts";
import { BUILD_COMMIT, BUILD_TARGET, VERSION } from "./version.ts";
import { KeyedHistogram } from "./shared/keyed-histogram.ts";

/** The last device detection, and a way to ask for a fresh one without waiting for it. */
export interface HostView {
  latest(): HostSnapshot | null;
  /** Start a detection when the latest is older than the cache allows (never blocks a scrape). */
  refreshIfStale(): void;
  /** Unix ms on the clock the snapshots are stamped with. */
  now(): number;
}

export interface MetricsDeps {
  bus: HiveBus;
  workers: WorkerRegistry;
  host?: HostView;
}

/** prom-client's process metrics that are meaningful under Bun (JSC has no Node GC or heap spaces). */
const KEPT_DEFAULT_METRICS = new Set([
  "process_cpu_user_seconds_total",
  "process_cpu_system_seconds_total",
  "process_cpu_seconds_total",
  "process_start_time_seconds",
  "process_resident_memory_bytes",
  "process_open_fds",
  "process_max_fds",
  "nodejs_eventloop_lag_seconds",
  "nodejs_eventloop_lag_p99_seconds",
]);
const PREFIX = "rbee_hive_";

/** Reasons of exits the hive asked for (a stop, the idle timeout, an unhealthy or stuck worker). */
const REQUESTED_STOPS = new Set(["stopped", "idle", "unhealthy", "load_timeout"]);
const HTTP_METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);

const SECONDS_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];

export class HiveMetrics {
  readonly registry = new Registry();
  private readonly shutdownDuration: Histogram;

  constructor(d: MetricsDeps) {
    this.processMetrics();
    this.workerGauges(d);
    this.workerLifecycle(d);
    this.downloads(d);
    this.host(d);
    this.http(d);
    this.shutdownDuration = this.shutdownAuditQueen(d);
  }

  private counter(name: string, help: string, labelNames: string[] = []): Counter {
    return new Counter({ name: PREFIX + name, help, labelNames, registers: [this.registry] });
  }

  private histogram(name: string, help: string, buckets: number[], labelNames: string[] = []): Histogram {
    return new Histogram({ name: PREFIX + name, help, labelNames, buckets, registers: [this.registry] });
  }

  /** A gauge set from current state on each scrape. */
  private gauge(name: string, help: string, labelNames: string[], fill: (g: Gauge) => void): Gauge {
    return new Gauge({
      name: PREFIX + name,
      help,
      labelNames,
      registers: [this.registry],
      collect() {
        this.reset();
        fill(this);
      },
    });
  }

  /** prom-client's process metrics that mean something under Bun, and the build. */
  private processMetrics(): void {
    collectDefaultMetrics({ register: this.registry, prefix: PREFIX });
    for (const m of this.registry.getMetricsAsArray()) {
      if (!KEPT_DEFAULT_METRICS.has(m.name.slice(PREFIX.length))) this.registry.removeSingleMetric(m.name);
    }
    new Gauge({ name: PREFIX + "build_info", help: "Build of this hive (always 1)", labelNames: ["version", "commit", "target", "bun_version"], registers: [this.registry] }).set(
      { version: VERSION, commit: BUILD_COMMIT, target: BUILD_TARGET, bun_version: Bun.version },
      1,
    );

  }

  /** Workers, from the registry at scrape time. */
  private workerGauges(d: MetricsDeps): void {
    this.gauge("workers", "Live workers by state, phase, backend and device (upstream: rbee_hive_workers_total)", ["state", "phase", "backend", "device"], (g) => {
      for (const w of d.workers.list()) g.inc({ state: w.state, phase: w.phase, backend: w.backend, device: String(w.device) });
    });
    this.gauge("workers_failed_health_checks", "Live workers whose last health check failed", [], (g) => {
      let n = 0;
      for (const w of d.workers.list()) if (w.failed_health_checks > 0) n++;
      g.set(n);
    });
    this.gauge("workers_restarts", "Restarts of the live workers, summed (upstream: rbee_hive_workers_restart_count)", [], (g) => {
      let n = 0;
      for (const w of d.workers.list()) n += w.restart_count;
      g.set(n);
    });
    this.gauge("worker_in_flight_requests", "Requests in flight on a running worker (through the hive and reported)", ["worker_id"], (g) => {
      for (const w of d.workers.list()) if (w.phase === "running") g.set({ worker_id: w.id }, w.in_flight);
    });
    const chunks = this.counter("worker_streamed_chunks_total", "Chunks of worker answers streamed back through the hive (one per token for workers that flush each token)", ["worker_id"]);
    d.workers.onChange((c) => {
      if (c.kind === "removed") chunks.remove({ worker_id: c.worker.id });
    });
    d.bus.on("stream_chunks", (e) => {
      if (d.workers.live(e.worker_id)) chunks.inc({ worker_id: e.worker_id }, e.chunks);
    });

  }

  /** Worker lifecycle, from the bus. */
  private workerLifecycle(d: MetricsDeps): void {
    const startDuration = this.histogram("worker_start_duration_seconds", "Process start to ready, per worker start", [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800]);
    const exits = this.counter("worker_exits_total", "Worker process exits by reason", ["reason"]);
    const restarts = this.counter("worker_restarts_total", "Worker restarts, by the reason of the exit that caused them (requested: an operator)", ["reason"]);
    const restartFailures = this.counter("worker_restart_failures_total", "Restarts that did not bring the worker back to ready (it exited, failed to launch or was parked first)");
    const breaker = this.counter("circuit_breaker_activations_total", "Workers parked in crash_loop by the restart policy (breaker, attempts or load failures)");
    const graceful = this.counter("workers_graceful_shutdown_total", "Worker stops the hive asked for that ended within the grace period");
    const forced = this.counter("workers_force_killed_total", "Worker stops the hive asked for that ended with SIGKILL after the grace period");
    const healthFailures = this.counter("worker_health_check_failures_total", "Failed worker health checks");
    const healthDuration = this.histogram("worker_health_check_duration_seconds", "Worker health check latency (failures included)", [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]);
    const refusals = this.counter("worker_spawn_resource_failures_total", "Spawns refused for resources (INSUFFICIENT_VRAM, INSUFFICIENT_RAM, DEVICE_UNHEALTHY)", ["code"]);
    /** Workers whose restart has not reached ready yet. */
    const restarting = new Set<string>();
    const restartEnded = (id: string, failed: boolean) => {
      if (restarting.delete(id) && failed) restartFailures.inc();
    };
    d.bus.on("ready", (e) => {
      startDuration.observe(e.load_ms / 1000);
      restartEnded(e.worker_id, false);
    });
    d.bus.on("exited", (e) => {
      exits.inc({ reason: e.reason });
      if (REQUESTED_STOPS.has(e.reason)) (e.signal === "SIGKILL" ? forced : graceful).inc();
      // A stop asked for while restarting is not a failed restart; a taken port is relaunched at once.
      if (e.reason !== "port_conflict") restartEnded(e.worker_id, e.reason !== "stopped" && e.reason !== "idle");
    });
    d.bus.on("restarting", (e) => {
      restarts.inc({ reason: e.reason });
      if (e.reason === "port_conflict") return;
      restartEnded(e.worker_id, true); // restarting again before ready: the last one failed
      restarting.add(e.worker_id);
    });
    d.bus.on("crash_loop", (e) => {
      breaker.inc();
      restartEnded(e.worker_id, true);
    });
    d.bus.on("spawn_failed", (e) => restartEnded(e.worker_id, true));
    d.bus.on("stopped", (e) => restartEnded(e.worker_id, false));
    d.bus.on("health_checked", (e) => {
      healthDuration.observe(e.seconds);
      if (!e.ok) healthFailures.inc();
    });
    d.bus.on("spawn_refused", (e) => refusals.inc({ code: e.code }));

  }

  /** Downloads, from the bus. */
  private downloads(d: MetricsDeps): void {
    const downloads = this.counter("downloads_total", "Model downloads that ended, by outcome", ["outcome"]);
    const downloaded = this.counter("models_downloaded_total", "Models downloaded and registered in the catalog");
    const downloadBytes = this.counter("download_bytes_total", "Bytes of model downloads that completed");
    const downloadDuration = this.histogram("download_duration_seconds", "Model download start to end, by outcome", [1, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200], ["outcome"]);
    const retries = this.counter("download_retries_total", "Ranged requests of model files retried, by cause (stall: nothing received for downloads.stall_timeout_s)", ["cause"]);
    const activeSince = new Map<string, number>();
    this.gauge("download_active", "Model downloads running now", [], (g) => g.set(activeSince.size));
    const ended = (id: string, at: number, outcome: string) => {
      downloads.inc({ outcome });
      const since = activeSince.get(id);
      activeSince.delete(id);
      if (since !== undefined) downloadDuration.observe({ outcome }, Math.max(0, at - since) / 1000);
    };
    d.bus.on("download_started", (e, ev) => activeSince.set(e.download_id, ev.time));
    d.bus.on("download_complete", (e, ev) => {
      ended(e.download_id, ev.time, "complete");
      downloaded.inc();
      downloadBytes.inc(e.bytes);
    });
    d.bus.on("download_failed", (e, ev) => ended(e.download_id, ev.time, e.code === "DOWNLOAD_CANCELLED" ? "cancelled" : "error"));
    d.bus.on("download_retried", (e) => retries.inc({ cause: e.stalled ? "stall" : "error" }));

  }

  /** Host, from the last device detection (a stale one starts a new detection in the background). */
  private host(d: MetricsDeps): void {
    const host = d.host;
    const hostGauge = (name: string, help: string, labels: string[], fill: (g: Gauge, s: HostSnapshot) => void) =>
      this.gauge(name, help, labels, (g) => {
        const s = host?.latest();
        if (s) fill(g, s);
      });
    if (host) {
      // The first of these collected in a scrape asks for a fresh detection; the scrape does not wait for it.
      new Gauge({ name: PREFIX + "host_detection_age_seconds", help: "Age of the device detection the host metrics come from", registers: [this.registry], collect() {
        host.refreshIfStale();
        const s = host.latest();
        this.reset();
        if (s) this.set(Math.max(0, host.now() - s.taken_at) / 1000);
      } });
      hostGauge("memory_total_bytes", "Host RAM", [], (g, s) => g.set(s.memory.total_bytes));
      hostGauge("memory_available_bytes", "Host RAM available (MemAvailable)", [], (g, s) => g.set(s.memory.available_bytes));
      hostGauge("disk_total_bytes", "Size of the filesystem of the models dir", [], (g, s) => s.disk && g.set(s.disk.total_bytes));
      hostGauge("disk_available_bytes", "Space available to the hive on the filesystem of the models dir", [], (g, s) => s.disk && g.set(s.disk.available_bytes));
      hostGauge("gpu_memory_total_bytes", "GPU memory by device", ["device"], (g, s) => {
        for (const gpu of s.gpus) g.set({ device: gpu.id }, gpu.memory_total_bytes);
      });
      hostGauge("gpu_memory_used_bytes", "GPU memory in use by device (as the driver reports it)", ["device"], (g, s) => {
        for (const gpu of s.gpus) if (gpu.memory_used_bytes !== null) g.set({ device: gpu.id }, gpu.memory_used_bytes);
      });
      hostGauge("gpu_utilization_ratio", "GPU utilisation by device, 0 to 1", ["device"], (g, s) => {
        for (const gpu of s.gpus) if (gpu.utilization_percent !== null) g.set({ device: gpu.id }, gpu.utilization_percent / 100);
      });
      hostGauge("gpu_temperature_celsius", "GPU temperature by device", ["device"], (g, s) => {
        for (const gpu of s.gpus) if (gpu.temperature_c !== null) g.set({ device: gpu.id }, gpu.temperature_c);
      });
    }

  }

  /** HTTP requests, from the socket's per-answer event. */
  private http(d: MetricsDeps): void {
    // One observation per request: a keyed histogram (src/shared/keyed-histogram.ts), not prom-client's.
    const requestDuration = new KeyedHistogram(
      PREFIX + "http_request_duration_seconds",
      "Requests by method, route template (unmatched: no route) and status, until the answer's headers",
      ["method", "route", "status"],
      SECONDS_BUCKETS,
      this.registry,
    );
    d.bus.on("http_request", (e) => requestDuration.observe([HTTP_METHODS.has(e.method) ? e.method : "other", e.route, String(e.status)], e.seconds));

  }

  /** Shutdown, audit and queen heartbeats; returns the shutdown histogram (observed at the next start). */
  private shutdownAuditQueen(d: MetricsDeps): Histogram {
    const shutdownDuration = this.histogram("shutdown_duration_seconds", "Graceful shutdowns of the hive on this data dir, observed by the next hive at its start", [0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 45, 60, 120]);
    const auditDropped = this.counter("audit_events_dropped_total", "Audit events dropped because the audit queue was full (the disk is behind)");
    const auditSlow = this.counter("audit_slow_flushes_total", "Requests answered before their audit line was on disk ([audit] flush_timeout_s passed)");
    d.bus.on("audit_dropped", (e) => (e.event === "slow_flush" ? auditSlow : auditDropped).inc());
    const heartbeats = this.counter("queen_heartbeats_total", "Heartbeats sent to queen-rbee, by outcome", ["outcome"]);
    const heartbeatDelay = this.histogram("queen_heartbeat_delay_seconds", "How late each heartbeat left against its schedule (event loop delay)", [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5]);
    const heartbeatDuration = this.histogram("queen_heartbeat_duration_seconds", "Heartbeat request to queen-rbee's answer", [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]);
    d.bus.on("queen_heartbeat", (e) => {
      heartbeats.inc({ outcome: e.ok ? "ok" : "error" });
      heartbeatDelay.observe(e.late_seconds);
      heartbeatDuration.observe(e.seconds);
    });
    return shutdownDuration;
  }

  /** The previous hive's shutdown on this data dir (it cannot be scraped once it exited). */
  observePreviousShutdown(seconds: number): void {
    this.shutdownDuration.observe(seconds);
  }

  render(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
