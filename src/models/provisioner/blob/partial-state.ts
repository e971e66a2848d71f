/**
 * A partial download on disk: `<blob>.rbee-partial` (the file, at its final size, with holes) and
 * `<blob>.rbee-partial.json` (how far each Range part got). The state is saved at most every
 * flush interval and never ahead of the data, so a restart, even after SIGKILL, resumes every part
 * where it stood.
 */
import { closeSync, existsSync, ftruncateSync, mkdirSync, openSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { HiveError, errorMessage } from "../../../shared/errors.ts";
import type { Logger } from "../../../shared/logger.ts";
import type { HfCacheRepo } from "../hf-cache.ts";
import type { RemoteFile } from "../hub-client.ts";
import { preallocate } from "../native-fs.ts";

export interface PartState {
  start: number;
  /** inclusive */
  end: number;
  done: number;
}

export interface PartialState {
  version: 1;
  etag: string;
  size: number;
  parts: PartState[];
}

export function partLen(part: PartState): number {
  return part.end - part.start + 1;
}

/** End of the contiguous written prefix of the file. */
export function writtenPrefix(parts: PartState[], size: number): number {
  for (const part of parts) if (part.done < partLen(part)) return part.start + part.done;
  return size;
}

export function doneBytes(parts: PartState[]): number {
  return parts.reduce((s, part) => s + part.done, 0);
}

/** The saved state, when it belongs to this very file and its parts tile it exactly; else null. */
function loadState(path: string, file: RemoteFile): PartialState | null {
  try {
    const s = JSON.parse(readFileSync(path, "utf8")) as PartialState;
    if (s?.version !== 1 || s.etag !== file.etag || s.size !== file.size || !Array.isArray(s.parts)) return null;
    let next = 0;
    for (const part of s.parts) {
      if (!validPart(part, next)) return null;
      next = part.end + 1;
    }
    return next === file.size ? s : null;
  } catch {
    return null;
  }
}

function validPart(part: PartState, start: number): boolean {
  return (
    Number.isSafeInteger(part.start) &&
    Number.isSafeInteger(part.end) &&
    Number.isSafeInteger(part.done) &&
    part.start === start &&
    part.end >= part.start &&
    part.done >= 0 &&
    part.done <= partLen(part)
  );
}

function freshState(file: RemoteFile, partSize: number): PartialState {
  const parts: PartState[] = [];
  const size = Math.max(1, partSize);
  for (let start = 0; start < file.size; start += size) {
    parts.push({ start, end: Math.min(file.size, start + size) - 1, done: 0 });
  }
  return { version: 1, etag: file.etag, size: file.size, parts };
}

function saveState(path: string, state: PartialState): void {
  const tmp = `${path}.tmp`; // one writer per blob in a process; a leftover is simply overwritten
  writeFileSync(tmp, JSON.stringify(state));
  renameSync(tmp, path);
}

/** Bytes of a partial download already on disk (per its state file), 0 when none. */
export function partialBytes(cache: HfCacheRepo, file: RemoteFile): number {
  const state = loadState(cache.partialStatePath(file.etag), file);
  if (!state || !existsSync(cache.partialPath(file.etag))) return 0;
  return doneBytes(state.parts);
}

/** Disk blocks a partial download already holds (preallocated or written), 0 when none. */
export function partialAllocatedBytes(cache: HfCacheRepo, file: RemoteFile): number {
  try {
    const st = statSync(cache.partialPath(file.etag));
    return Math.min(file.size, st.blocks * 512);
  } catch {
    return 0;
  }
}

/**
 * Open the partial file for writing: resumed when its state is sound and the file has the full
 * size, else created afresh, its blocks reserved (fallocate, else sparse). 507 INSUFFICIENT_DISK
 * when the reservation finds the disk full.
 */
export function openPartial(
  cache: HfCacheRepo,
  file: RemoteFile,
  opts: { partSizeBytes: number; preallocate: boolean },
): { fd: number; state: PartialState } {
  const partialPath = cache.partialPath(file.etag);
  const statePath = cache.partialStatePath(file.etag);
  mkdirSync(cache.blobsDir, { recursive: true });
  const saved = loadState(statePath, file);
  if (saved && existsSync(partialPath) && statSync(partialPath).size === file.size) {
    return { fd: openSync(partialPath, "r+"), state: saved };
  }
  const state = freshState(file, opts.partSizeBytes);
  const fd = openSync(partialPath, "w+");
  const reserved = opts.preallocate ? preallocate(fd, file.size) : "unsupported";
  if (reserved === "nospace") {
    closeSync(fd);
    cache.removePartial(file.etag);
    throw new HiveError(507, "INSUFFICIENT_DISK", `no space left to reserve ${file.size} bytes for ${file.path}`, {
      required_bytes: file.size,
      available_bytes: null,
      path: cache.blobsDir,
    });
  }
  if (reserved !== "reserved") ftruncateSync(fd, file.size);
  saveState(statePath, state);
  return { fd, state };
}

/** Saves the part progress, at most every `flushIntervalMs` unless forced; a failed save is logged. */
export class StateSaver {
  private lastSave = performance.now();
  /** A save deferred by the interval: a burst followed by silence (a stall) is still saved. */
  private trailing: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private readonly path: string,
    private readonly state: PartialState,
    private readonly flushIntervalMs: number,
    private readonly logger: Logger,
    private readonly what: string,
  ) {}

  private closed = false;

  save(force = false): void {
    if (this.closed) return;
    const now = performance.now();
    if (!force && now - this.lastSave < this.flushIntervalMs) {
      // Without this, the state of data that arrived in one burst before a stall stays unsaved
      // until more data comes: a SIGKILL then would download it all again.
      if (!this.trailing) {
        this.trailing = setTimeout(() => this.save(true), this.flushIntervalMs - (now - this.lastSave));
        (this.trailing as { unref?: () => void }).unref?.();
      }
      return;
    }
    if (this.trailing) clearTimeout(this.trailing);
    this.trailing = null;
    this.lastSave = now;
    try {
      saveState(this.path, this.state);
    } catch (e) {
      this.logger.warn("could not save download state", { file: this.what, error: errorMessage(e) });
    }
  }

  /** No more saves, a deferred one included: the blob is complete (or purged) and its state file goes. */
  close(): void {
    this.closed = true;
    if (this.trailing) clearTimeout(this.trailing);
    this.trailing = null;
  }
}
