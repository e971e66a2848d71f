/** One provision() call's bookkeeping: the progress its caller is told, and the stats of its result. */
import type { ModelPlan } from "./plan.ts";

export interface ProvisionProgress {
  phase: "verifying" | "downloading";
  /** Bytes of the model on disk (reused + resumed + transferred). */
  bytes_downloaded: number;
  bytes_total: number;
  /** Bytes fetched over the network by this call. */
  bytes_transferred: number;
  file: string;
  files_done: number;
  files_total: number;
}

export interface ProvisionStats {
  bytes_total: number;
  bytes_transferred: number;
  bytes_reused: number;
  bytes_resumed: number;
  retries: number;
  stalls: number;
}

export class ProvisionRun {
  readonly progress: ProvisionProgress;
  readonly stats: ProvisionStats;

  constructor(
    readonly plan: ModelPlan,
    readonly signal: AbortSignal,
    private readonly onProgress: ((p: ProvisionProgress) => void) | undefined,
  ) {
    this.progress = {
      phase: "verifying",
      bytes_downloaded: 0,
      bytes_total: plan.bytesTotal,
      bytes_transferred: 0,
      file: "",
      files_done: 0,
      files_total: plan.files.length,
    };
    this.stats = { bytes_total: plan.bytesTotal, bytes_transferred: 0, bytes_reused: 0, bytes_resumed: 0, retries: 0, stalls: 0 };
  }

  /** Tell the caller where things stand (a copy: the caller may keep it). */
  emit(): void {
    this.onProgress?.({ ...this.progress });
  }

  /** Fresh bytes from the network. */
  transferred(n: number): void {
    this.progress.bytes_downloaded += n;
    this.progress.bytes_transferred += n;
    this.stats.bytes_transferred += n;
    this.emit();
  }
}
