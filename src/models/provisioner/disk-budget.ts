/**
 * Free space for downloads: what a download needs plus a margin must fit into what the file
 * system has, less what downloads already running in this process were promised.
 */
import { statfsSync } from "node:fs";
import { HiveError } from "../../shared/errors.ts";
import type { StatfsLike } from "./options.ts";

export class DiskBudget {
  /** Bytes promised to downloads in flight (disk check of concurrent jobs). */
  private reserved = 0;

  constructor(
    private readonly dir: string,
    private readonly marginBytes: number,
    private readonly statfs: (path: string) => StatfsLike = (p) => statfsSync(p),
  ) {}

  /** Throws 507 INSUFFICIENT_DISK when `needed` + margin does not fit; else holds `needed` until release(). */
  reserve(needed: number): { release(): void } {
    this.check(needed);
    this.reserved += needed;
    return { release: () => void (this.reserved -= needed) };
  }

  private check(needed: number): void {
    if (needed <= 0) return;
    const st = this.statfs(this.dir);
    const free = Number(st.bavail) * Number(st.bsize);
    const available = Math.max(0, free - this.reserved);
    const required = needed + this.marginBytes;
    if (required > available) {
      throw new HiveError(
        507,
        "INSUFFICIENT_DISK",
        `not enough disk space in ${this.dir}: the download needs ${needed} bytes plus a ${this.marginBytes}-byte margin (${required}), ${available} are available`,
        { required_bytes: required, available_bytes: available, download_bytes: needed, margin_bytes: this.marginBytes, path: this.dir },
      );
    }
  }
}
