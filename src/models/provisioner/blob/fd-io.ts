/** File-descriptor calls as promises (the download path keeps plain fds), and a background fdatasync. */
import { fdatasync as fdatasyncCb, fsync as fsyncCb, read as readCb } from "node:fs";

export function readAt(fd: number, buf: Uint8Array, off: number, len: number, pos: number): Promise<number> {
  return new Promise((res, rej) => readCb(fd, buf, off, len, pos, (e, n) => (e ? rej(e) : res(n))));
}

export function fsyncFd(fd: number): Promise<void> {
  return new Promise((res, rej) => fsyncCb(fd, (e) => (e ? rej(e) : res())));
}

function fdatasyncFd(fd: number): Promise<void> {
  return new Promise((res, rej) => fdatasyncCb(fd, (e) => (e ? rej(e) : res())));
}

/**
 * An fdatasync started every `everyBytes` written, one at a time, so the disk writes during the
 * transfer and the final fsync is short. Its errors are left to that final fsync.
 */
export class BackgroundSync {
  private unsynced = 0;
  private syncing: Promise<void> | null = null;

  constructor(
    private readonly fd: number,
    private readonly everyBytes: number,
  ) {}

  written(n: number): void {
    this.unsynced += n;
  }

  /** Start a sync if enough was written since the last one and none is running. */
  maybeStart(): void {
    if (this.unsynced < this.everyBytes || this.syncing !== null) return;
    this.unsynced = 0;
    this.syncing = fdatasyncFd(this.fd)
      .catch(() => {})
      .finally(() => (this.syncing = null));
  }

  /** Resolves when no sync is running (before fsync or close). */
  async idle(): Promise<void> {
    if (this.syncing) await this.syncing;
  }
}
