/**
 * What the hive tells others about itself, assembled from the config: metrics, the audit trail
 * (`[audit] mode = "local"`), the heartbeat to queen-rbee (QUEEN_CALLBACK_URL), the auth and
 * request observers the app and the socket call, and the record of a shutdown that the next hive
 * on the same data dir reports (a process that has exited cannot be scraped).
 */
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { hiveIdOf, type LoadedConfig } from "./config.ts";
import type { HiveBus } from "./events.ts";
import { HiveMetrics, type HostView } from "./metrics.ts";
import { AuditTrail } from "./audit.ts";
import type { OpenAuditFile } from "./shared/audit-logging.ts";
import { QueenHeartbeat } from "./queen/heartbeat.ts";
import type { AuthEvent } from "./http/middleware/auth.ts";
import { UNMATCHED_ROUTE, routeTemplateMatcher, type RouteLike } from "./http/route-template.ts";
import type { AnsweredRequest } from "./server.ts";
import type { Clock } from "./shared/clock.ts";
import { contextOf } from "./shared/correlation.ts";
import { errorMessage, isHiveError } from "./shared/errors.ts";
import type { HttpClient } from "./shared/http-client.ts";
import type { Logger } from "./shared/logger.ts";
import type { SpawnAdmission } from "./shared/spawn-admission.ts";
import type { HostSnapshot } from "./resources/types.ts";
import type { WorkerRegistry } from "./workers/registry.ts";
import { VERSION } from "./version.ts";

/** Where a graceful shutdown is recorded for the next hive (deleted once reported). */
const LAST_SHUTDOWN_FILE = "last-shutdown.json";

export interface ObservabilityDeps {
  loaded: LoadedConfig;
  bus: HiveBus;
  registry: WorkerRegistry;
  logger: Logger;
  clock: Clock;
  http: HttpClient;
  /** How the audit log opens its files (default: append to the real file). */
  auditFile?: OpenAuditFile;
  /** Device detection (its answers feed the host metrics). */
  inventory: { snapshot(): Promise<HostSnapshot>; onSnapshot(l: (s: HostSnapshot) => void): () => void };
}

export class Observability {
  readonly metrics: HiveMetrics;
  readonly hiveId: string;
  private heartbeat: QueenHeartbeat | null = null;
  private routeOf: ((method: string, path: string) => string) | null = null;

  private constructor(
    private readonly d: ObservabilityDeps,
    readonly audit: AuditTrail | null,
  ) {
    const { config } = d.loaded;
    this.hiveId = hiveIdOf(config);
    this.metrics = new HiveMetrics({ bus: d.bus, workers: d.registry, host: hostView(d.inventory, d.clock, config.resources.cache_ttl_s * 1000) });
    d.bus.publish("config_loaded", { source: d.loaded.source ?? null, hive_id: this.hiveId, version: VERSION, addr: config.server.addr, audit_mode: config.audit.mode });
  }

  /** Throws (a startup error) when the audit dir cannot be used. */
  static async create(d: ObservabilityDeps): Promise<Observability> {
    const { config, resolved } = d.loaded;
    let audit: AuditTrail | null = null;
    if (config.audit.mode === "local") {
      audit = await AuditTrail.open({
        dir: resolved.auditDir,
        queueMax: config.audit.queue_max,
        flushTimeoutMs: config.audit.flush_timeout_s * 1000,
        bus: d.bus,
        logger: d.logger,
        now: () => d.clock.now(),
        openFile: d.auditFile,
      });
    }
    return new Observability(d, audit);
  }

  /** The app's auth hook: the decision goes on the bus (metrics, audit) with the request's correlation id; the answer waits for its audit line. */
  onAuthEvent = (event: AuthEvent, request: Request): void => {
    const ctx = contextOf(request);
    if (event.outcome === "success") {
      this.d.bus.publish("auth_success", { method: event.method, path: event.path, token: event.fingerprint ?? "", correlation_id: ctx.correlationId });
    } else {
      this.d.bus.publish("auth_failure", { method: event.method, path: event.path, token: event.fingerprint ?? null, reason: event.reason ?? "", correlation_id: ctx.correlationId });
    }
    const written = this.audit?.takeSecurityWrite();
    if (written) ctx.hold(written);
  };

  /** The socket's per-answer hook: request duration by route template. */
  answered(routes: () => readonly RouteLike[]): (r: AnsweredRequest) => void {
    return (r) => {
      this.routeOf ??= routeTemplateMatcher(routes());
      const route = r.path === null ? UNMATCHED_ROUTE : this.routeOf(r.method, r.path);
      this.d.bus.publish("http_request", { method: r.method, route, status: r.status, seconds: r.seconds });
    };
  }

  /** Spawns refused for memory or an unhealthy device are counted (the rest of the port passes through). */
  countRefusals<Need extends Parameters<SpawnAdmission["admit"]>[0]["need"]>(admission: SpawnAdmission<Need>): SpawnAdmission<Need> {
    const bus = this.d.bus;
    return {
      estimate: (model, context) => admission.estimate(model, context),
      admit: async (req) => {
        try {
          await admission.admit(req);
        } catch (e) {
          if (isHiveError(e) && RESOURCE_REFUSALS.has(e.code)) bus.publish("spawn_refused", { code: e.code, backend: req.backend, device: req.device });
          throw e;
        }
      },
      adopt: (req) => admission.adopt(req),
      release: (id) => admission.release(id),
      attachPid: (id, pid) => admission.attachPid(id, pid),
      holds: (id) => admission.holds(id),
      onUsage: (listener) => admission.onUsage(listener),
      refresh: () => admission.refresh(),
    };
  }

  /** With QUEEN_CALLBACK_URL: heartbeats from now on (the first at once). */
  startHeartbeat(token: string | undefined): void {
    const { config } = this.d.loaded;
    if (!config.queen.callback_url || this.heartbeat) return;
    this.heartbeat = new QueenHeartbeat({
      http: this.d.http,
      logger: this.d.logger,
      callbackUrl: config.queen.callback_url,
      token,
      hiveId: this.hiveId,
      intervalMs: config.queen.heartbeat_interval_s * 1000,
      workers: () => this.d.registry.list(),
      now: () => this.d.clock.now(),
      onBeat: (o) => this.d.bus.publish("queen_heartbeat", o),
    });
    this.heartbeat.start();
    this.d.logger.info("queen heartbeat started", { url: config.queen.callback_url, hive_id: this.hiveId, interval_s: config.queen.heartbeat_interval_s });
  }

  stopHeartbeat(): void {
    this.heartbeat?.stop();
  }

  /**
   * The last teardown step: the shutdown goes on the bus (audit) and into the data dir for the next
   * hive's metrics, then the audit log is synced and closed.
   */
  async recordShutdown(progress: { reason: string; ms: number } | null, tally: { workers_total: number; graceful: number; forced: number; kept: number }): Promise<void> {
    if (progress) {
      const record = { reason: progress.reason, ms: progress.ms, ...tally };
      this.d.bus.publish("shutdown", record);
      try {
        writeFileSync(join(this.d.loaded.resolved.dataDir, LAST_SHUTDOWN_FILE), JSON.stringify({ ...record, at: this.d.clock.now() }) + "\n");
      } catch (e) {
        this.d.logger.warn("could not record the shutdown for the next hive", { err: errorMessage(e) });
      }
    }
    await this.audit?.close();
  }

  /** Once this hive serves (a hive that fails to start leaves the record for the next one). */
  reportPreviousShutdown(): void {
    const path = join(this.d.loaded.resolved.dataDir, LAST_SHUTDOWN_FILE);
    let text: string;
    try {
      text = readFileSync(path, "utf8");
    } catch {
      return; // none recorded (first start, or the last hive did not stop gracefully)
    }
    rmSync(path, { force: true });
    try {
      const ms = (JSON.parse(text) as { ms?: unknown }).ms;
      if (typeof ms === "number" && ms >= 0) this.metrics.observePreviousShutdown(ms / 1000);
    } catch {
      this.d.logger.warn("ignored an unreadable record of the previous shutdown", { file: path });
    }
  }
}

const RESOURCE_REFUSALS = new Set(["INSUFFICIENT_VRAM", "INSUFFICIENT_RAM", "DEVICE_UNHEALTHY"]);

/** The metrics' view of device detection: the latest answer, and a fresh one started when it is stale. */
function hostView(inventory: ObservabilityDeps["inventory"], clock: Clock, ttlMs: number): HostView {
  let latest: HostSnapshot | null = null;
  let pending = false;
  inventory.onSnapshot((s) => (latest = s));
  return {
    latest: () => latest,
    now: () => clock.now(),
    refreshIfStale: () => {
      if (pending || (latest && clock.now() - latest.taken_at < ttlMs)) return;
      pending = true;
      void inventory.snapshot().finally(() => (pending = false));
    },
  };
}
