/**
 * What goes into the audit log (src/shared/audit-logging.ts), taken from the event bus: auth
 * decisions (security events: the request's answer waits for their line to be on disk, at most
 * [audit] flush_timeout_s), the workers' lifecycle, models downloaded and deleted, the config a
 * hive started with and its shutdown.
 */
import type { HiveBus, HiveEvents } from "./events.ts";
import { AuditLog, type OpenAuditFile } from "./shared/audit-logging.ts";
import type { Logger } from "./shared/logger.ts";

export interface AuditTrailOptions {
  dir: string;
  queueMax: number;
  flushTimeoutMs: number;
  bus: HiveBus;
  logger: Logger;
  now: () => number;
  openFile?: OpenAuditFile;
}

type Mapped = { [K in keyof HiveEvents]?: (e: HiveEvents[K]) => [string, Record<string, unknown>] };

/** Bus event → audit event name and fields (what is not listed is not audited). */
const MAPPING: Mapped = {
  auth_success: (e) => ["auth_success", { ...e }],
  auth_failure: (e) => ["auth_failure", { ...e }],
  spawned: (e) => ["worker_spawned", { ...e }],
  ready: (e) => ["worker_ready", { ...e }],
  stopped: (e) => ["worker_stopped", { ...e }],
  exited: (e) => [e.reason === "killed" ? "worker_killed" : "worker_exited", { ...e }],
  restarting: (e) => ["worker_restarted", { ...e }],
  idle_stopped: (e) => ["worker_idle_stopped", { ...e }],
  crash_loop: (e) => ["worker_crash_loop", { ...e }],
  adopted: (e) => ["worker_adopted", { ...e }],
  download_complete: (e) => ["model_downloaded", { ...e }],
  model_deleted: (e) => ["model_deleted", { ...e }],
  config_loaded: (e) => ["config_loaded", { ...e }],
  shutdown: (e) => ["shutdown", { ...e }],
};
const SECURITY = new Set<string>(["auth_success", "auth_failure"]);

export class AuditTrail {
  /** The line of the last security event, until the auth hook takes it to hold the answer. */
  private lastSecurityWrite: Promise<void> | null = null;
  private readonly unsubscribe: Array<() => void> = [];

  private constructor(
    readonly log: AuditLog,
    private readonly o: AuditTrailOptions,
  ) {
    for (const [type, map] of Object.entries(MAPPING) as Array<[keyof HiveEvents, (e: unknown) => [string, Record<string, unknown>]]>) {
      this.unsubscribe.push(
        o.bus.on(type, (data) => {
          const [event, fields] = map(data);
          const security = SECURITY.has(event);
          const written = log.record(event, fields, { security });
          if (security) this.lastSecurityWrite = written;
          written?.catch(() => {}); // a failed write is logged by the writer
        }),
      );
    }
  }

  static async open(o: AuditTrailOptions): Promise<AuditTrail> {
    const log = await AuditLog.open({
      dir: o.dir,
      queueMax: o.queueMax,
      now: o.now,
      logger: o.logger,
      onDropped: (event) => o.bus.publish("audit_dropped", { event }),
      openFile: o.openFile,
    });
    return new AuditTrail(log, o);
  }

  /**
   * The wait for the security line just recorded (by the bus publish before this call), bounded by
   * flush_timeout_s: past it the request is answered anyway, and the log and a metric say so.
   * Null when nothing is to be waited for (the event was dropped: the queue is full).
   */
  takeSecurityWrite(): Promise<void> | null {
    const written = this.lastSecurityWrite;
    this.lastSecurityWrite = null;
    if (!written) return null;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((resolve) => (timer = setTimeout(() => resolve("late"), this.o.flushTimeoutMs)));
    return Promise.race([written.then(() => "ok" as const, () => "ok" as const), late]).then((outcome) => {
      clearTimeout(timer);
      if (outcome === "late") {
        this.o.logger.warn("audit line not on disk within flush_timeout_s; answering anyway", { flush_timeout_s: this.o.flushTimeoutMs / 1000 });
        this.o.bus.publish("audit_dropped", { event: "slow_flush" });
      }
    });
  }

  /** Everything recorded goes to disk; the file is closed (the last teardown step). */
  async close(): Promise<void> {
    for (const u of this.unsubscribe.splice(0)) u();
    await this.log.close();
  }
}
