/** Aborts a connection that received nothing for `stallTimeoutMs`, so it is retried. */
import { TransientError } from "../retry.ts";

export interface Connection {
  lastActivity: number;
  readonly ctrl: AbortController;
  stalled: boolean;
  /** Unhooks the connection from the transfer's abort signal. */
  readonly detach: () => void;
}

export class StallWatchdog {
  private readonly active = new Set<Connection>();
  private readonly timer: ReturnType<typeof setInterval>;

  constructor(private readonly stallTimeoutMs: number) {
    // A quarter of the timeout: a stall is seen at most 25 % late; bounded to [5 ms, 1 s].
    const every = Math.max(5, Math.min(1000, Math.floor(stallTimeoutMs / 4)));
    this.timer = setInterval(() => this.check(), every);
  }

  /** A connection for one request, aborted with `parent` too. */
  open(parent: AbortSignal): Connection {
    const ctrl = new AbortController();
    const onAbort = () => ctrl.abort(parent.reason);
    parent.addEventListener("abort", onAbort, { once: true });
    const conn: Connection = { lastActivity: performance.now(), ctrl, stalled: false, detach: () => parent.removeEventListener("abort", onAbort) };
    this.active.add(conn);
    return conn;
  }

  close(conn: Connection): void {
    this.active.delete(conn);
    conn.detach();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  private check(): void {
    const now = performance.now();
    for (const c of this.active) {
      if (!c.stalled && now - c.lastActivity > this.stallTimeoutMs) {
        c.stalled = true;
        c.ctrl.abort(new TransientError(`no data for ${this.stallTimeoutMs} ms`));
      }
    }
  }
}
