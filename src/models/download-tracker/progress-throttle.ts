/**
 * A job's progress → `downloading` events: at most one per `intervalMs` (a trailing one is
 * scheduled, so the latest state always goes out), none when nothing changed, with the speed
 * measured over the last SPEED_WINDOW_MS.
 */
import type { Clock, Timer } from "../../shared/clock.ts";
import type { ProvisionProgress } from "../provisioner/provisioner.ts";
import type { ProgressEvent } from "../schemas.ts";

/** Window of the speed estimate. */
const SPEED_WINDOW_MS = 3000;
/** Bound on the samples kept when progress arrives very often. */
const MAX_SAMPLES = 512;

export interface ProgressThrottleOptions {
  clock: Clock;
  intervalMs: number;
  /** The job's progress as it stands now. */
  current: () => ProvisionProgress;
  /** False once the job ended: a scheduled trailing event is then dropped. */
  active: () => boolean;
  emit: (data: ProgressEvent) => void;
}

export class ProgressThrottle {
  /** megabytes (10^6 bytes) per second */
  speedMbps = 0;
  private readonly samples: Array<[t: number, bytes: number]> = [];
  private lastEmitAt = -Infinity;
  private lastEmitted = "";
  private timer: Timer | null = null;

  constructor(private readonly o: ProgressThrottleOptions) {}

  /** New progress arrived (its bytes_transferred feed the speed). */
  sample(bytesTransferred: number): void {
    const now = this.o.clock.monotonic();
    this.samples.push([now, bytesTransferred]);
    while (this.samples.length > 2 && now - this.samples[0]![0] > SPEED_WINDOW_MS) this.samples.shift();
    if (this.samples.length > MAX_SAMPLES) this.samples.splice(0, this.samples.length - MAX_SAMPLES);
    this.flush(false);
  }

  /** Emit now if the interval allows (or `force`), else schedule a trailing event. */
  flush(force: boolean): void {
    const now = this.o.clock.monotonic();
    const wait = this.o.intervalMs - (now - this.lastEmitAt);
    if (!force && wait > 0) {
      this.timer ??= this.o.clock.setTimeout(() => {
        this.timer = null;
        if (this.o.active()) this.flush(false);
      }, wait);
      return;
    }
    this.cancel();
    this.updateSpeed();
    const p = this.o.current();
    const sig = `${p.bytes_downloaded}/${p.bytes_total}/${p.files_done}/${p.phase}/${p.file}`;
    if (sig === this.lastEmitted) return;
    this.lastEmitted = sig;
    this.lastEmitAt = now;
    this.o.emit({
      stage: "downloading",
      bytes_downloaded: p.bytes_downloaded,
      bytes_total: p.bytes_total,
      speed_mbps: roundedSpeed(this.speedMbps),
      file: p.file,
      files_done: p.files_done,
      files_total: p.files_total,
      phase: p.phase,
    });
  }

  /** Drop a scheduled trailing event. */
  cancel(): void {
    if (this.timer) this.o.clock.clearTimeout(this.timer);
    this.timer = null;
  }

  private updateSpeed(): void {
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    if (first && last && last[0] > first[0]) {
      this.speedMbps = (((last[1] - first[1]) / (last[0] - first[0])) * 1000) / 1e6; // bytes/ms → MB/s
    }
  }
}

/** Two decimals, as the events and the job list show it. */
export function roundedSpeed(mbps: number): number {
  return Math.round(mbps * 100) / 100;
}
